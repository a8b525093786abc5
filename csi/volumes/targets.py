"""Publish targets: the per-pod paths a staged volume is bound onto."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from csi.errors import FailedPrecondition
from csi.faults import crash_point
from csi.host import mount
from csi.host.copy import give_tree_to_group
from csi.state.records import VolumeRecord
from csi.volumes import encryption


def mounted_anywhere(record: VolumeRecord) -> bool:
    """Is anything mounted at the volume's staging path or any of its targets?"""
    table = mount.read_mounts()
    paths = [record.staging_path, *record.targets]
    return any(p and mount.mounts_at(p, table) for p in paths)


def publish_filesystem(
    record: VolumeRecord,
    staging: Path,
    target: Path,
    *,
    read_only: bool,
    flags: list[str],
    group: int | None,
) -> None:
    """Publish a staged filesystem (an encrypted one's data directory) and, for a writable
    target, hand it to the pod's fsGroup."""
    source = encryption.data_dir(staging) if record.spec.encrypted else None
    publish_mount(staging, target, read_only=read_only, flags=flags, source=source)
    if group is not None and not read_only:
        give_to_group(target, group)


def unpublish_filesystem(target: Path) -> None:
    unpublish(target)
    crash_point("unpublish:unmounted")


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
    _bind_new_target(source or staging, target, read_only=read_only, flags=flags)


def publish_directory(
    directory: Path, target: Path, *, read_only: bool, flags: list[str], group: int | None
) -> None:
    """Bind a directory volume's own directory onto ``target`` (no staging mount in
    between) and, for a writable target, hand it to the pod's fsGroup."""
    if not directory.is_dir():
        raise FailedPrecondition(f"the volume's data directory {directory} is missing")
    _bind_new_target(directory, target, read_only=read_only, flags=flags)
    if group is not None and not read_only:
        give_to_group(target, group)


def _bind_new_target(source: Path, target: Path, *, read_only: bool, flags: list[str]) -> None:
    """Bind ``source`` onto ``target``, a directory we create if missing (and remove again
    if the bind fails); a target already mounted is left as it is."""
    if mount.is_mount_point(target):
        return
    created = _make_target(target, directory=True)
    try:
        _bind_onto(source, target, directory=True, read_only=read_only, flags=flags)
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
        _bind_onto(device, target, directory=False, read_only=read_only, flags=[])
    except BaseException:
        if created:
            _remove_target(target)
        raise


def _bind_onto(
    source: Path | str, target: Path, *, directory: bool, read_only: bool, flags: list[str]
) -> None:
    """Bind ``source`` onto the very file or directory the target path names now: opened
    without following a symlink, checked, and mounted through its descriptor, so a symlink
    swapped in after validation cannot redirect the mount elsewhere on the host."""
    fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
            raise FailedPrecondition(f"target path {target} changed type (a symlink?)")
        mount.bind_mount(source, target, read_only=read_only, flags=flags, target_fd=fd)
    finally:
        os.close(fd)


def give_to_group(root: Path, gid: int) -> None:
    """Let the pod's fsGroup use the volume, as the kubelet would; skipped when the root
    already belongs to the group and is setgid (the kubelet's OnRootMismatch policy)."""
    st = os.lstat(root)
    if st.st_gid == gid and st.st_mode & 0o2000:
        return
    give_tree_to_group(root, gid)


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
