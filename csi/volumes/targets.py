"""Publish targets: the per-pod paths a staged volume is bound onto."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from csi.errors import FailedPrecondition
from csi.host import mount


def publish_mount(
    staging: Path,
    target: Path,
    *,
    read_only: bool,
    flags: list[str],
    source: Path | None = None,
) -> None:
    """Bind the staged filesystem (or ``source`` inside it) onto ``target``, a directory we
    create if missing."""
    if not mount.is_mount_point(staging):
        raise FailedPrecondition(f"volume is not staged at {staging}")
    if mount.is_mount_point(target):
        return
    created = _make_target(target, directory=True)
    try:
        mount.bind_mount(source or staging, target, read_only=read_only, flags=flags)
    except BaseException:
        if created:
            _remove_target(target)
        raise


def publish_block(device: str | None, target: Path, *, read_only: bool) -> None:
    """Bind the loop device node onto ``target`` (a file we create if missing)."""
    if device is None:
        raise FailedPrecondition("volume is not staged: no loop device is attached")
    if mount.is_mount_point(target):
        return
    created = _make_target(target, directory=False)
    try:
        mount.bind_mount(device, target, read_only=read_only)
    except BaseException:
        if created:
            _remove_target(target)
        raise


def give_to_group(root: Path, gid: int) -> None:
    """Let the pod's fsGroup use the volume, as the kubelet would: every file group-owned
    and group-readable/writable, directories also group-searchable and setgid. Skipped when
    the root already belongs to the group (the kubelet's OnRootMismatch policy)."""
    if os.lstat(root).st_gid == gid and os.lstat(root).st_mode & 0o2000:
        return
    _give(root, gid)
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            _give(Path(directory) / name, gid)


def _give(path: Path, gid: int) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return  # links carry no permissions of their own; never follow them
    if st.st_gid != gid:
        os.chown(path, -1, gid, follow_symlinks=False)
    extra = 0o2070 if stat.S_ISDIR(st.st_mode) else 0o060
    mode = stat.S_IMODE(st.st_mode)
    if mode | extra != mode:
        os.chmod(path, mode | extra)


def bound_device(target: Path) -> str | None:
    """The loop device node bind-mounted at ``target`` (a block publish), if any."""
    for entry in mount.mounts_at(target):
        name = os.path.basename(entry.root)
        if name.startswith("loop") and name[4:].isdigit():
            return f"/dev/{name}"
    return None


def unpublish(target: Path) -> None:
    """Unmount ``target`` and remove the file or directory we made there."""
    mount.unmount(target)
    _remove_target(target)


def _make_target(target: Path, *, directory: bool) -> bool:
    parent = target.parent
    if not parent.is_dir():
        raise FailedPrecondition(f"parent directory of target path {target} does not exist")
    try:
        if directory:
            os.mkdir(target, 0o750)
        else:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
            os.close(fd)
    except FileExistsError:
        is_dir = target.is_dir()
        if is_dir != directory:
            kind = "a directory" if directory else "a file"
            raise FailedPrecondition(f"target path exists and is not {kind}") from None
        if directory and any(os.scandir(target)):
            # Mounting over files would hide them, and unpublish could not remove the path.
            raise FailedPrecondition("target path is a directory that is not empty") from None
        return False
    return True


def _remove_target(target: Path) -> None:
    if mount.is_mount_point(target):
        return
    with contextlib.suppress(FileNotFoundError):
        if target.is_dir() and not target.is_symlink():
            if any(os.scandir(target)):
                return  # files appeared under the unmounted path: keep them, never delete
            os.rmdir(target)
        else:
            os.unlink(target)
