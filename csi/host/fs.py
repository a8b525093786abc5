"""Filesystem facts and durable file operations."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from csi.host import modes


@dataclass(frozen=True)
class Usage:
    total_bytes: int
    available_bytes: int
    used_bytes: int
    total_inodes: int
    free_inodes: int
    used_inodes: int


def usage(path: Path | str) -> Usage:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bfree * st.f_frsize
    available = st.f_bavail * st.f_frsize
    return Usage(
        total_bytes=total,
        available_bytes=available,
        used_bytes=total - free,
        total_inodes=st.f_files,
        free_inodes=st.f_ffree,
        used_inodes=st.f_files - st.f_ffree,
    )


def available_bytes(path: Path | str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_sparse_file(path: Path, size: int) -> None:
    """Create (or reset) ``path`` as a sparse file of ``size`` bytes, flushed to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, modes.PRIVATE_FILE)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(
    path: Path, data: bytes, mode: int = modes.PRIVATE_FILE, *, durable: bool = True
) -> None:
    """Replace ``path`` with ``data`` through a temp file and a rename, so a crash of the
    process leaves the old content or the new, never a torn file.

    ``durable``: the data and the rename are fsynced too, so a power loss keeps the new
    content. Without it nothing waits for the disk: after a power loss the file may hold
    the old content, the new, or (on filesystems that do not order a replacing rename
    after its data) be empty, so use it only for what a power loss makes untrue anyway.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        if durable:
            durable_rename(tmp, path)
        else:
            os.rename(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def durable_rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)
    fsync_dir(dst.parent)


@dataclass(frozen=True)
class Space:
    """A filesystem's room and whether it takes writes (statvfs)."""

    read_only: bool
    total_bytes: int
    available_bytes: int
    total_inodes: int
    available_inodes: int


def space(path: Path | str) -> Space:
    """Room on the filesystem holding ``path``; OSError if it cannot be read."""
    st = os.statvfs(path)
    return Space(
        read_only=bool(st.f_flag & os.ST_RDONLY),
        total_bytes=st.f_blocks * st.f_frsize,
        available_bytes=st.f_bavail * st.f_frsize,
        total_inodes=st.f_files,
        available_inodes=st.f_favail,
    )


SYS_EXT4 = Path("/sys/fs/ext4")


def ext4_error_count(device: str) -> int:
    """Errors the kernel counted on the ext4 filesystem of ``device`` since it was mounted
    (0 when it cannot tell)."""
    try:
        return int((SYS_EXT4 / os.path.basename(device) / "errors_count").read_text())
    except (OSError, ValueError):
        return 0
