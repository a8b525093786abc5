"""Files and directories the driver makes and removes under its data root (and the private
mount points it makes there): every change the volume layer makes to plain files goes
through here, so host/ stays the one place that changes the host."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

from csi.host import modes


def make_dir(path: Path, mode: int = modes.PRIVATE_DIR, *, parents: bool = False) -> None:
    """Make ``path`` (an existing directory is fine) with ``mode`` before the umask; missing
    parents are made private too (Path.mkdir would give them 0777 less the umask)."""
    if parents and not path.parent.is_dir():
        make_dir(path.parent, modes.PRIVATE_DIR, parents=True)
    path.mkdir(mode=mode, exist_ok=True)


def set_mode(path: Path, mode: int) -> None:
    os.chmod(path, mode)


def restrict(path: Path | str, allowed: int) -> bool:
    """Clear the permission bits of ``path`` outside ``allowed`` (a no-op when none are
    set); True if it changed. A symlink, or a path gone already, is left alone."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        return False
    narrowed = modes.restricted(st.st_mode, allowed)
    if narrowed == stat.S_IMODE(st.st_mode):
        return False
    os.chmod(path, narrowed)
    return True


def remove_dir(path: Path) -> None:
    """Remove an empty directory; gone already is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)


def remove_file(path: Path) -> None:
    path.unlink(missing_ok=True)


def remove(path: Path) -> None:
    """Remove a file or a whole tree (never following a symlink); gone already is fine."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            os.unlink(path)


def read_text(path: Path) -> str:
    return path.read_text()


def size_of(path: Path) -> int | None:
    """The file's apparent size, None if it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def allocated_bytes(path: Path) -> int:
    """What the (sparse) file really holds on disk; 0 if it does not exist."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def allocate(path: Path, size: int) -> None:
    """Make ``path`` (a private file) hold ``size`` bytes of allocated blocks; what is
    allocated before an ENOSPC stays."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, modes.PRIVATE_FILE)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def extend(path: Path, size: int) -> None:
    """Grow the file (sparse) to at least ``size``; never shrinks it."""
    if path.stat().st_size < size:
        os.truncate(path, size)


def move(src: Path, dst: Path) -> None:
    """Rename within one filesystem (atomic; not made durable here)."""
    os.rename(src, dst)


def is_empty_dir(path: Path) -> bool:
    with os.scandir(path) as entries:
        return next(entries, None) is None


def grow_durably(path: Path, size: int) -> int:
    """Grow the file (sparse) to at least ``size`` and make the new size durable; returns
    its size. Never shrinks, and a no-op once done, so a retry after a crash finds the work
    done."""
    current = path.stat().st_size
    if current >= size:
        return current
    os.truncate(path, size)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return size


def read_regular_file(path: str, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the regular file ``path``, opened without following a
    final symlink and without blocking on a FIFO; OSError if it cannot be opened,
    IsADirectoryError-like ValueError if it is not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        return os.read(fd, limit + 1)
    finally:
        os.close(fd)
