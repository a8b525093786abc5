"""Fast file copies: copy-on-write clones where the filesystem can, sparse copies otherwise."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path

FICLONE = 0x40049409  # ioctl: share all extents of one file with another (btrfs, xfs)
CHUNK = 64 * 1024 * 1024


def clone_or_copy(src: Path, dst: Path) -> str:
    """Copy ``src`` to a new file ``dst`` (fsynced); returns "reflink" or "sparse".

    A reflink shares extents and costs nothing up front. Otherwise only the data regions
    are copied (SEEK_DATA/SEEK_HOLE with copy_file_range), so holes stay holes and are never
    read.
    """
    with open(src, "rb") as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            method = "reflink"
            try:
                fcntl.ioctl(fd, FICLONE, fin.fileno())
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
                    raise
                method = "sparse"
                _sparse_copy(fin.fileno(), fd, os.fstat(fin.fileno()).st_size)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            dst.unlink(missing_ok=True)
            raise
        os.close(fd)
    return method


def _sparse_copy(src_fd: int, dst_fd: int, size: int) -> None:
    os.ftruncate(dst_fd, size)
    offset = 0
    while offset < size:
        try:
            start = os.lseek(src_fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                break
            raise
        end = os.lseek(src_fd, start, os.SEEK_HOLE)
        position = start
        while position < end:
            count = min(CHUNK, end - position)
            copied = os.copy_file_range(src_fd, dst_fd, count, position, position)
            if copied == 0:
                break
            position += copied
        offset = end


def copy_tree(src: Path, dst: Path) -> None:
    """Copy a directory tree, keeping modes, owners, times and symlinks as they are."""
    try:
        shutil.copytree(src, dst, symlinks=True, copy_function=_copy_file)
    except shutil.Error as exc:
        # copytree gathers per-file errors into one without an errno; a full disk must
        # still read as ENOSPC to the caller.
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst)) from None
        raise
    _fsync_tree(dst)


def _copy_file(src: str, dst: str) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
        except OSError:
            _sparse_copy(fin.fileno(), fout.fileno(), os.fstat(fin.fileno()).st_size)
    shutil.copystat(src, dst)
    st = os.stat(src)
    os.chown(dst, st.st_uid, st.st_gid)


def _fsync_tree(root: Path) -> None:
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
