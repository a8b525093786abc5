"""The files and directories mounts go onto: made for a publish, removed after it, and the
bind onto them done through a descriptor so no symlink swapped in can redirect it."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from csi.host import files, modes, mount
from csi.host.errors import MountPointUnusable


def make(target: Path, *, directory: bool) -> bool:
    """Make the mount point (a directory, or an empty file for a device); True if this call
    made it. An existing one of the right kind is used if it is empty."""
    parent = target.parent
    if not parent.is_dir():
        raise MountPointUnusable(f"parent directory of target path {target} does not exist")
    try:
        if directory:
            os.mkdir(target, modes.MOUNT_POINT_DIR)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(target, flags, modes.MOUNT_POINT_FILE)
            os.close(fd)
    except FileExistsError:
        if target.is_dir() != directory:
            kind = "a directory" if directory else "a file"
            raise MountPointUnusable(f"target path exists and is not {kind}") from None
        if directory and not files.is_empty_dir(target):
            # Mounting over files would hide them, and unpublish could not remove the path.
            raise MountPointUnusable("target path is a directory that is not empty") from None
        return False
    return True


def remove(target: Path) -> None:
    """Remove a mount point nothing is mounted on; one that files appeared in is kept."""
    if mount.is_mount_point(target):
        return
    with contextlib.suppress(FileNotFoundError):
        if target.is_dir() and not target.is_symlink():
            if files.is_empty_dir(target):
                os.rmdir(target)
        else:
            os.unlink(target)


def bind_onto(
    source: Path | str, target: Path, *, directory: bool, read_only: bool, flags: list[str]
) -> None:
    """Bind ``source`` onto the very file or directory the target path names now: opened
    without following a symlink, checked, and mounted through its descriptor."""
    fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
            raise MountPointUnusable(f"target path {target} changed type (a symlink?)")
        mount.bind_mount(source, target, read_only=read_only, flags=flags, target_fd=fd)
    finally:
        os.close(fd)


def group_of(root: Path) -> tuple[int, bool]:
    """The root's group and whether it is setgid."""
    st = os.lstat(root)
    return st.st_gid, bool(st.st_mode & stat.S_ISGID)


def bound_loop_device(target: Path) -> str | None:
    """The loop device node bind-mounted at ``target`` (a block publish), if any."""
    for entry in mount.mounts_at(target):
        name = os.path.basename(entry.root)
        if name.startswith("loop") and name[4:].isdigit():
            return f"/dev/{name}"
    return None
