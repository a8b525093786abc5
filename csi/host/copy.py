"""Fast file copies: copy-on-write clones where the filesystem can, sparse copies otherwise.

The clone is csi.host.kernel's step ``copy:clone`` (FICLONE): a filesystem that cannot clone
answers with an errno that means so, and the copy is made the sparse way instead.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from csi.host import kernel, modes
from csi.host.errors import IoctlFailed

FICLONE = 0x40049409  # ioctl: share all extents of one file with another (btrfs, xfs)
# FICLONE's answers for "not here": no reflinks on this filesystem, two filesystems, a file
# it cannot clone. Any other errno (EIO, ENOSPC) fails the copy.
CANNOT_CLONE = (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY)
CHUNK = 64 * 1024 * 1024


def clone_or_copy(src: Path, dst: Path) -> str:
    """Copy ``src`` to a new file ``dst`` (fsynced); returns "reflink" or "sparse".

    A reflink shares extents and costs nothing up front. Otherwise only the data regions
    are copied (SEEK_DATA/SEEK_HOLE with copy_file_range), so holes stay holes and are never
    read. A clone that fails for any other reason fails the copy (IoctlFailed).
    """
    with open(src, "rb") as fin:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        fd = os.open(dst, flags, modes.PRIVATE_FILE)
        try:
            method = "reflink"
            try:
                kernel.ioctl("copy:clone", fd, FICLONE, fin.fileno(), where=str(dst))
            except IoctlFailed as failed:
                if failed.errno not in CANNOT_CLONE:
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


def copy_tree(src: Path, dst: Path, *, existing: bool = False) -> None:
    """Copy a directory tree a pod may be changing, without ever following its symlinks;
    into ``dst`` made here, or (``existing``) into the empty directory the caller made.

    The walk holds a file descriptor for each directory and opens every entry relative to it
    with O_NOFOLLOW, checking with fstat that it is what the listing said: a file or
    directory swapped for a symlink mid-copy is skipped, never read through. Regular files,
    directories and symlinks (as links) are copied with their mode, owner and times; device
    nodes, FIFOs and sockets are not. Everything is fsynced.
    """
    if not existing:
        os.mkdir(dst, modes.PRIVATE_DIR)  # its mode is the source's once the copy is complete
    directories: list[tuple[Path, os.stat_result]] = [(dst, os.stat(src))]
    for dirpath, dirnames, filenames, dirfd in os.fwalk(src, follow_symlinks=False):
        here = dst / os.path.relpath(dirpath, src)
        for name in (*dirnames, *filenames):
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            target = here / name
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(target, modes.PRIVATE_DIR)
                directories.append((target, st))
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(name, dir_fd=dirfd), target)
                os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
            elif stat.S_ISREG(st.st_mode):
                _copy_file_at(dirfd, name, st, target)
    for directory, st in reversed(directories):  # deepest first, so times stay put
        os.chown(directory, st.st_uid, st.st_gid)
        os.chmod(directory, stat.S_IMODE(st.st_mode))
        os.utime(directory, ns=(st.st_atime_ns, st.st_mtime_ns))
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _copy_file_at(dirfd: int, name: str, listed: os.stat_result, target: Path) -> None:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fin = os.open(name, flags, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENXIO):
            return  # swapped for a link or removed since the listing: not copied
        raise
    try:
        st = os.fstat(fin)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (listed.st_dev, listed.st_ino):
            return
        creating = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        fout = os.open(target, creating, modes.PRIVATE_FILE)
        try:
            try:
                kernel.ioctl("copy:clone", fout, FICLONE, fin, where=str(target))
            except IoctlFailed:  # whatever the reason: a pod's file is copied even so
                _sparse_copy(fin, fout, st.st_size)
            os.fchown(fout, st.st_uid, st.st_gid)
            os.fchmod(fout, stat.S_IMODE(st.st_mode))
            os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.fsync(fout)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def give_tree_to_group(root: Path, gid: int) -> None:
    """Make every file and directory under ``root`` group-owned by ``gid`` and group
    read/writable (directories also searchable and setgid), never following a symlink: each
    entry is opened relative to its directory with O_NOFOLLOW and changed through that
    descriptor, so a pod swapping a file for a link cannot aim this at a host file."""
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _give(top, gid)
    finally:
        os.close(top)
    for _dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        for name in (*dirnames, *filenames):
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
            if not stat.S_ISREG(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode):
                flags |= os.O_DIRECTORY  # anything else but a directory fails to open: skipped
            try:
                fd = os.open(name, flags, dir_fd=dirfd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.ENXIO):
                    continue
                raise
            try:
                _give(fd, gid)
            finally:
                os.close(fd)


def _give(fd: int, gid: int) -> None:
    st = os.fstat(fd)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return
    if st.st_gid != gid:
        os.fchown(fd, -1, gid)
    mode = stat.S_IMODE(st.st_mode)
    shared = modes.group_shared(mode, directory=stat.S_ISDIR(st.st_mode))
    if shared != mode:
        os.fchmod(fd, shared)
