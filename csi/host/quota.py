"""Project quotas: a directory volume held to its size by the filesystem it lives on.

A directory gets a project ID and the inherit flag while it is still empty (fsxattr); from
then on everything made under it is charged to that project, and the filesystem refuses a
write past the project's limit (xfs: ENOSPC, ext4: EDQUOT). ``statvfs`` of such a directory
reports the project's limit and use, so NodeGetVolumeStats and ``df`` in a pod show the
volume's own numbers. Limits are read and set with ``quotactl_fd``, which takes any open
descriptor on the filesystem: no block device node is needed (a container usually has none).

Turning quotas on is the node's job (xfs: mounted with ``prjquota``; ext4: the ``quota`` and
``project`` features, mounted with ``prjquota``); this module only finds out whether they
are on (``support``) and says what the node would have to change.

Every call goes through the kernel seam (csi.host.kernel), whose steps ``quota:*`` and
``fsxattr:*`` the reliability tier can fail on demand.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from csi.host import kernel
from csi.host.errors import SyscallFailed

PRJQUOTA = 2
_SUBCMD_SHIFT = 8


def _qcmd(command: int) -> int:
    return (command << _SUBCMD_SHIFT) | PRJQUOTA


Q_GETQUOTA = _qcmd(0x800007)
Q_SETQUOTA = _qcmd(0x800008)
Q_XGETQSTATV = _qcmd((ord("X") << 8) + 8)

# struct if_dqblk: block limits in 1 KiB units, space in bytes, inode limits and count,
# two grace times, the mask of valid fields (padded to 8 bytes).
_DQBLK = struct.Struct("=8QI4x")
_QIF_BLIMITS, _QIF_SPACE, _QIF_ILIMITS, _QIF_INODES = 1, 2, 4, 8
_QIF_LIMITS = _QIF_BLIMITS | _QIF_ILIMITS
_QIF_USAGE = _QIF_SPACE | _QIF_INODES
_QIF_DQBLKSIZE = 1024

# struct fs_quota_statv (version 1): version, pad, flags, incore dquots, then three
# fs_qfilestatv (inode, blocks, extents, pad) for user, group and project quotas, time and
# warning limits, padding.
_STATV = struct.Struct("=bBHI" + "QQII" * 3 + "iiiHHHHI7Q")
_FS_QSTATV_VERSION1 = 1
_FS_QUOTA_PDQ_ACCT, _FS_QUOTA_PDQ_ENFD = 16, 32

# struct fsxattr: xflags, extent size, extents, project ID, CoW extent size, 8 bytes pad.
_FSXATTR = struct.Struct("=5I8s")
FS_IOC_FSGETXATTR = (2 << 30) | (_FSXATTR.size << 16) | (ord("X") << 8) | 31
FS_IOC_FSSETXATTR = (1 << 30) | (_FSXATTR.size << 16) | (ord("X") << 8) | 32
FS_XFLAG_PROJINHERIT = 0x200

# Why a filesystem may not hold a project to its limit: the kernel cannot (ENOSYS, also
# what some kernels answer for "not on"), the filesystem has no such thing, or it is off.
_NOT_HERE = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOENT)
_NOT_ON = (errno.ESRCH,)
_NOT_ALLOWED = (errno.EPERM, errno.EACCES)  # a seccomp profile, or no CAP_SYS_ADMIN
HOW_TO_TURN_ON = (
    "on xfs mount the data root's filesystem with prjquota; on ext4 run "
    "`tune2fs -O quota,project` on it while unmounted and mount it with prjquota; the "
    "kernel needs CONFIG_QUOTA, CONFIG_QFMT_V2 (ext4) or CONFIG_XFS_QUOTA (xfs)"
)


@dataclass(frozen=True)
class Support:
    """Whether the filesystem at a path holds projects to their limits, and if not, why."""

    enforced: bool
    reason: str = ""  # why not, with what the node would have to change


@dataclass(frozen=True)
class Charge:
    """A project's use and its hard limits (0: no limit)."""

    bytes_used: int
    inodes_used: int
    byte_limit: int
    inode_limit: int

    @property
    def idle(self) -> bool:
        """Nothing charged and no limit: free for a new owner."""
        return not (self.bytes_used or self.inodes_used or self.byte_limit or self.inode_limit)


@contextmanager
def _opened(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def support(path: Path) -> Support:
    """Are project quotas accounted and enforced on the filesystem of ``path``?"""
    statv = bytearray(_STATV.size)
    statv[0] = _FS_QSTATV_VERSION1
    try:
        with _opened(path) as fd:
            kernel.quotactl_fd("quota:state", fd, Q_XGETQSTATV, 0, statv, where=str(path))
            kernel.ioctl(
                "fsxattr:get", fd, FS_IOC_FSGETXATTR, bytearray(_FSXATTR.size), where=str(path)
            )
    except SyscallFailed as failed:
        if failed.errno in _NOT_HERE + _NOT_ON:
            return Support(False, _not_enforced(path, failed.errno))
        if failed.errno in _NOT_ALLOWED:
            return Support(
                False,
                f"the driver may not manage quotas ({failed.message}): it needs CAP_SYS_ADMIN "
                "and a seccomp profile that allows quotactl_fd (a privileged container has both)",
            )
        raise
    flags = _STATV.unpack(statv)[2]
    if not flags & _FS_QUOTA_PDQ_ACCT:
        return Support(False, _not_enforced(path, errno.ESRCH))
    if not flags & _FS_QUOTA_PDQ_ENFD:
        return Support(
            False, f"project quotas of the filesystem at {path} are counted but not enforced"
        )
    return Support(True)


def _not_enforced(path: Path, code: int) -> str:
    what = "are not on" if code in _NOT_ON else "are not available"
    return f"project quotas {what} for the filesystem at {path}: {HOW_TO_TURN_ON}"


def project_of(directory: Path) -> tuple[int, bool]:
    """``directory``'s project ID and whether what is made in it inherits it."""
    with _opened(directory) as fd:
        return _get_xattr(fd, directory)


def _get_xattr(fd: int, where: Path) -> tuple[int, bool]:
    buffer = bytearray(_FSXATTR.size)
    kernel.ioctl("fsxattr:get", fd, FS_IOC_FSGETXATTR, buffer, where=str(where))
    xflags, _, _, project, _, _ = _FSXATTR.unpack(buffer)
    return project, bool(xflags & FS_XFLAG_PROJINHERIT)


def assign(directory: Path, project: int) -> None:
    """Put ``directory`` (still empty: what it holds already stays charged where it was) in
    ``project``, inherited by everything made under it. Idempotent."""
    with _opened(directory) as fd:
        buffer = bytearray(_FSXATTR.size)
        kernel.ioctl("fsxattr:get", fd, FS_IOC_FSGETXATTR, buffer, where=str(directory))
        xflags, extsize, extents, current, cow, pad = _FSXATTR.unpack(buffer)
        if current == project and xflags & FS_XFLAG_PROJINHERIT:
            return
        packed = _FSXATTR.pack(xflags | FS_XFLAG_PROJINHERIT, extsize, extents, project, cow, pad)
        kernel.ioctl("fsxattr:set", fd, FS_IOC_FSSETXATTR, bytearray(packed), where=str(directory))


def charge(path: Path, project: int) -> Charge:
    """``project``'s use and limits on the filesystem of ``path``."""
    buffer = bytearray(_DQBLK.size)
    with _opened(path) as fd:
        try:
            kernel.quotactl_fd("quota:get", fd, Q_GETQUOTA, project, buffer, where=str(path))
        except SyscallFailed as failed:
            if failed.errno != errno.ENOENT:
                raise
            return Charge(0, 0, 0, 0)  # xfs keeps no entry for a project never charged
    bhard, _, space, ihard, _, inodes, _, _, _ = _DQBLK.unpack(buffer)
    return Charge(space, inodes, bhard * _QIF_DQBLKSIZE, ihard)


def limit(path: Path, project: int, max_bytes: int, max_inodes: int, *, step: str) -> None:
    """Hold ``project`` to ``max_bytes`` (rounded up to the quota's 1 KiB unit) and
    ``max_inodes`` on the filesystem of ``path``; 0 lifts a limit. ``step`` names the call
    for errors and fault injection (quota:limit, quota:grow, quota:lift)."""
    blocks = -(-max_bytes // _QIF_DQBLKSIZE)
    packed = _DQBLK.pack(blocks, blocks, 0, max_inodes, max_inodes, 0, 0, 0, _QIF_LIMITS)
    with _opened(path) as fd:
        kernel.quotactl_fd(step, fd, Q_SETQUOTA, project, bytearray(packed), where=str(path))


CAP_SYS_RESOURCE = 24


@contextmanager
def held_to_limits() -> Iterator[None]:
    """Within: this thread's writes are held to quota limits like anyone's (ext4 lets a
    process with CAP_SYS_RESOURCE past a hard limit; the capability is out of this thread's
    effective set, and only this thread's, until the block ends)."""
    with kernel.capability_set_aside(CAP_SYS_RESOURCE):
        yield
