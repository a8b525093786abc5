"""The one seam between the host layer and the kernel's mount, loop and ioctl interfaces.

Every mount, unmount and ioctl the driver makes is one of the calls here: ``mount(2)`` and
``umount2(2)`` through libc, the ioctls of ``/dev/loop-control`` and ``/dev/loopN``, and
through ``ioctl`` every other one (fscrypt keys and policies, FIFREEZE/FITHAW, FIEMAP,
FICLONE: the modules that need them name the step and keep their own structs). Nothing
forks. A failure comes back as the typed host error of its kind (``MountFailed``,
``UnmountFailed``, ``IoctlFailed``, ``LoopFailed`` for the loop family) carrying the errno,
never as a bare OSError, so ``csi.status`` can give it its code and a caller that has a use
for one errno (EINVAL from FITHAW: not frozen) tests ``errno``.

Fault injection lives here too, so the reliability tier can fail each step on demand: with
``CSI_FAIL_SYSCALL`` set to a comma-separated list of steps (``mount:bind``, or a whole
family such as ``loop``), each selected step fails with EIO before it reaches the kernel,
exactly as a real failure would surface. Unset (production), the check is one dictionary
lookup per call. The variable is read at each call, so a test may set it in-process.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import stat
import struct
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypeVar, overload

from csi.host import modes
from csi.host.errors import IoctlFailed, LoopFailed, MountFailed, SyscallFailed, UnmountFailed

FAULT_ENV = "CSI_FAIL_SYSCALL"
# Every step the seam can be told to fail; a selector names a step or its family.
STEPS = frozenset(
    {
        "mount:fs",  # mount a filesystem from a device
        "mount:bind",  # bind a file or directory onto a target
        "mount:remount",  # change a bind mount's per-mount flags (ro, nosuid, ...)
        "mount:propagation",  # make a mount shared, private, slave or unbindable
        "umount",
        "loop:find",  # LOOP_CTL_GET_FREE
        "loop:configure",  # LOOP_CONFIGURE (or LOOP_SET_FD + LOOP_SET_STATUS64)
        "loop:clear",  # LOOP_CLR_FD
        "loop:capacity",  # LOOP_SET_CAPACITY
        "loop:status",  # LOOP_GET_STATUS64: which file a bound device reads (loopdev.py)
        "fscrypt:add-key",  # FS_IOC_ADD_ENCRYPTION_KEY (fscrypt.py)
        "fscrypt:remove-key",  # FS_IOC_REMOVE_ENCRYPTION_KEY
        "fscrypt:get-policy",  # FS_IOC_GET_ENCRYPTION_POLICY_EX
        "fscrypt:set-policy",  # FS_IOC_SET_ENCRYPTION_POLICY
        "freeze:freeze",  # FIFREEZE before a snapshot's copy (freeze.py)
        "freeze:thaw",  # FITHAW after it, or at start-up after a crash
        "extents:map",  # FS_IOC_FIEMAP: a file's extents (extents.py)
        "copy:clone",  # FICLONE: a copy that shares the source's extents (copy.py)
        "fsxattr:get",  # FS_IOC_FSGETXATTR: a directory's project ID (quota.py)
        "fsxattr:set",  # FS_IOC_FSSETXATTR: a new directory volume joins its project
        "quota:state",  # quotactl_fd Q_XGETQSTATV: are project quotas on?
        "quota:get",  # Q_GETQUOTA: a project's use and limits
        "quota:limit",  # Q_SETQUOTA: a new directory volume's limit
        "quota:grow",  # Q_SETQUOTA: its limit raised by an expansion
        "quota:lift",  # Q_SETQUOTA: its limit lifted once it is deleted
        "capability:set-aside",  # capget/capset: this thread without CAP_SYS_RESOURCE
    }
)

# umount2(2) flags.
UMOUNT_NOFOLLOW = 8

LOOP_CONTROL = "/dev/loop-control"
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_SET_CAPACITY = 0x4C07
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
# struct loop_info64 (loopdev.py reads its fields), and struct loop_config around it: the
# backing fd and the logical block size (__u32 each), the loop_info64, 64 reserved bytes.
LOOP_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")
LOOP_CONFIG = struct.Struct("=2I" + LOOP_INFO64.format.lstrip("=") + "8Q")
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
# Two attachers may be handed the same free device; the loser retries with a new one.
ATTACH_ATTEMPTS = 16

T = TypeVar("T")


class _Libc:
    """libc's mount(2) and umount2(2), typed once."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.mount = libc.mount
        self.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        self.mount.restype = ctypes.c_int
        self.umount2 = libc.umount2
        self.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self.umount2.restype = ctypes.c_int


_LIBC = _Libc()


def selected(step: str) -> bool:
    """Is ``step`` selected to fail by CSI_FAIL_SYSCALL?"""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return False
    family = step.split(":", 1)[0]
    return any(s in (step, family) for s in wanted.split(","))


def _injected(step: str) -> OSError:
    return OSError(errno.EIO, f"{os.strerror(errno.EIO)} (injected by {FAULT_ENV}={step})")


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, f"errno {code}")


def _reason(exc: OSError) -> str:
    code = exc.errno or 0
    return f"{exc.strerror or os.strerror(code)} [{errno_name(code)}]"


# -- mount(2), umount2(2) --------------------------------------------------------------------
def mount(
    step: str,
    source: str | None,
    target: str,
    fs_type: str | None,
    flags: int,
    data: str | None = None,
    *,
    what: str = "",
) -> None:
    """mount(2); ``step`` names it for fault injection and errors, ``what`` describes the
    mount for the error message (never the caller's options: they may hold secrets)."""
    try:
        if selected(step):
            raise _injected(step)
        rc = _LIBC.mount(
            None if source is None else os.fsencode(source),
            os.fsencode(target),
            None if fs_type is None else fs_type.encode(),
            flags,
            None if data is None else data.encode(),
        )
        if rc != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    except OSError as exc:
        code = exc.errno or errno.EIO
        raise MountFailed(
            f"mount failed ({step}{', ' + what if what else ''} at {target}): {_reason(exc)}",
            step=step,
            errno=code,
        ) from None


def umount(target: str, *, is_mounted: Callable[[], bool]) -> bool:
    """umount2(2) of the top mount at ``target`` (symlinks not followed). Returns False if
    nothing is mounted there (EINVAL, ENOENT); ``is_mounted`` is asked only when the step is
    selected to fail, so an injected failure hits real unmounts only."""
    try:
        if selected("umount") and is_mounted():
            raise _injected("umount")
        if _LIBC.umount2(os.fsencode(target), UMOUNT_NOFOLLOW) == 0:
            return True
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
            return False  # not a mount point, or no such path: nothing mounted there
        raise OSError(code, os.strerror(code))
    except OSError as exc:
        code = exc.errno or errno.EIO
        raise UnmountFailed(
            f"umount failed at {target}: {_reason(exc)}", step="umount", errno=code
        ) from None


# -- ioctl(2) --------------------------------------------------------------------------------
def _step(step: str, where: str, call: Callable[[], T]) -> T:
    """``call()`` as the seam's ``step`` on ``where``: failed on demand before it runs, and
    its OSError typed (the open of a loop device is part of its step, as is its ioctl)."""
    try:
        if selected(step):
            raise _injected(step)
        return call()
    except OSError as exc:
        raise _failed(step, where, exc) from None


def _failed(step: str, where: str, exc: OSError) -> IoctlFailed:
    """The typed error of ``step``: LoopFailed for the loop family (csi.status and the loop
    callers know it by that name), IoctlFailed for any other."""
    code = exc.errno or errno.EIO
    kind = LoopFailed if step.startswith("loop:") else IoctlFailed
    return kind(f"{step} failed on {where}: {_reason(exc)}", step=step, errno=code)


def _raw_ioctl(fd: int, request: int, arg: int | bytes | bytearray) -> int | bytes:
    # The mutate flag: a bytearray is filled in place (fcntl copies anything else).
    return fcntl.ioctl(fd, request, arg, True)


@overload
def ioctl(step: str, fd: int, request: int, arg: int = 0, *, where: str) -> int: ...
@overload
def ioctl(step: str, fd: int, request: int, arg: bytearray, *, where: str) -> int: ...
@overload
def ioctl(step: str, fd: int, request: int, arg: bytes, *, where: str) -> bytes: ...
def ioctl(
    step: str, fd: int, request: int, arg: int | bytes | bytearray = 0, *, where: str
) -> int | bytes:
    """ioctl(2) on ``fd``, the one way the driver makes one. ``step`` names it for fault
    injection and errors, ``where`` is the file it is made on, for the message. An int
    ``arg`` is passed as it is and the call's result returned; a bytearray is filled in
    place (the result returned); bytes are copied and the kernel's copy returned. A failure
    is an IoctlFailed (LoopFailed for a ``loop:`` step) with the errno, an injected one EIO."""
    return _step(step, where, partial(_raw_ioctl, fd, request, arg))


# -- loop devices ----------------------------------------------------------------------------
def _open_device(number: int, mode: int) -> int:
    """Open /dev/loopN; if the node is missing (a /dev without devtmpfs), make it from the
    numbers sysfs gives the device."""
    path = f"/dev/loop{number}"
    try:
        return os.open(path, mode | os.O_CLOEXEC)
    except FileNotFoundError:
        with open(f"/sys/block/loop{number}/dev") as fh:
            major, minor = (int(x) for x in fh.read().split(":"))
        with contextlib.suppress(FileExistsError):
            os.mknod(path, modes.LOOP_DEVICE | stat.S_IFBLK, os.makedev(major, minor))
        return os.open(path, mode | os.O_CLOEXEC)


def _info(backing: str, read_only: bool, autoclear: bool = False) -> bytes:
    name = os.fsencode(backing)[:63]
    flags = (LO_FLAGS_READ_ONLY if read_only else 0) | (LO_FLAGS_AUTOCLEAR if autoclear else 0)
    return LOOP_INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, flags, name, b"", b"", 0, 0)


def _configure(device: str, device_fd: int, backing_fd: int, info: bytes) -> None:
    """Bind the backing file in one step; kernels before 5.8 lack LOOP_CONFIGURE and get
    the two-step LOOP_SET_FD + LOOP_SET_STATUS64, undone if its second step fails."""
    config = LOOP_CONFIG.pack(backing_fd, 0, *LOOP_INFO64.unpack(info), *([0] * 8))
    step = "loop:configure"
    try:
        ioctl(step, device_fd, LOOP_CONFIGURE, config, where=device)
        return
    except LoopFailed as failed:
        if failed.errno not in (errno.EINVAL, errno.ENOTTY):
            raise
    ioctl(step, device_fd, LOOP_SET_FD, backing_fd, where=device)
    try:
        ioctl(step, device_fd, LOOP_SET_STATUS64, info, where=device)
    except LoopFailed:
        ioctl(step, device_fd, LOOP_CLR_FD, where=device)
        raise


def loop_attach(backing: str, *, read_only: bool) -> str:
    """Bind ``backing`` to a free loop device (no autoclear, like ``losetup --find``);
    returns /dev/loopN. A read-only device is opened, bound and flagged read-only."""
    device, fd = _attach(backing, read_only=read_only, autoclear=False)
    os.close(fd)
    return device


def loop_attach_held(backing: str) -> tuple[str, int]:
    """Bind ``backing`` to a free loop device with autoclear, and keep it open: returns
    /dev/loopN and the open descriptor. The kernel unbinds the device at its last close:
    when the caller closes the descriptor with nothing mounted on it, or when a mount on
    it goes after that; the descriptor also closes if the process dies."""
    return _attach(backing, read_only=False, autoclear=True)


def loop_close(fd: int) -> None:
    """Close a descriptor of loop_attach_held (an autoclear device unbinds at its last)."""
    os.close(fd)


def _attach(backing: str, *, read_only: bool, autoclear: bool) -> tuple[str, int]:
    mode = os.O_RDONLY if read_only else os.O_RDWR
    try:
        backing_fd = os.open(backing, mode | os.O_CLOEXEC)
    except OSError as exc:
        raise _failed("loop:configure", backing, exc) from None
    try:
        control = _step("loop:find", LOOP_CONTROL, lambda: os.open(LOOP_CONTROL, os.O_RDWR))
        try:
            return _attach_free(control, backing_fd, _info(backing, read_only, autoclear), mode)
        finally:
            os.close(control)
    finally:
        os.close(backing_fd)


def _attach_free(control: int, backing_fd: int, info: bytes, mode: int) -> tuple[str, int]:
    """The bound device and its open descriptor (the caller closes it)."""
    for _ in range(ATTACH_ATTEMPTS):
        number = ioctl("loop:find", control, LOOP_CTL_GET_FREE, where=LOOP_CONTROL)
        device = f"/dev/loop{number}"
        fd = _step("loop:configure", device, partial(_open_device, number, mode))
        try:
            _configure(device, fd, backing_fd, info)
            return device, fd
        except LoopFailed as failed:
            os.close(fd)
            if failed.errno != errno.EBUSY:
                raise
            # Another attacher bound it between our find and our configure: find again.
        except BaseException:
            os.close(fd)
            raise
    raise LoopFailed(
        f"loop:configure failed: every free device was taken first ({ATTACH_ATTEMPTS} tries)",
        step="loop:configure",
        errno=errno.EBUSY,
    )


def _open_bound(step: str, device: str) -> int:
    """Open /dev/loopN for an ioctl of ``step`` (the open fails, or is failed, as the step)."""
    return _step(step, device, lambda: os.open(device, os.O_RDONLY | os.O_CLOEXEC))


def _with_device(step: str, device: str, request: int) -> None:
    fd = _open_bound(step, device)
    try:
        ioctl(step, fd, request, where=device)
    finally:
        os.close(fd)


def loop_detach(device: str) -> None:
    """LOOP_CLR_FD: unbind now, or (device still open elsewhere) when the last opener
    closes it, as the kernel decides. A device already unbound is left as it is."""
    try:
        _with_device("loop:clear", device, LOOP_CLR_FD)
    except LoopFailed as failed:
        if failed.errno != errno.ENXIO:
            raise


def loop_set_capacity(device: str) -> None:
    """LOOP_SET_CAPACITY: the device takes its backing file's current size."""
    _with_device("loop:capacity", device, LOOP_SET_CAPACITY)


def loop_status(device: str) -> bytes:
    """LOOP_GET_STATUS64: the bound device's struct loop_info64 (LOOP_INFO64), as the kernel
    fills it. An unbound device fails with ENXIO, a missing node with ENOENT (LoopFailed)."""
    fd = _open_bound("loop:status", device)
    try:
        return ioctl("loop:status", fd, LOOP_GET_STATUS64, bytes(LOOP_INFO64.size), where=device)
    finally:
        os.close(fd)


# -- quotas and capabilities -----------------------------------------------------------------
class _Syscalls:
    """quotactl_fd(2), capget(2) and capset(2) by number: libc has no wrapper for the first,
    and the others must act on this thread alone."""

    QUOTACTL_FD = 443  # x86_64 and aarch64 alike (a syscall number added after 5.14)
    CAPGET, CAPSET = {"x86_64": (125, 126), "aarch64": (90, 91)}.get(os.uname().machine, (125, 126))

    def __init__(self) -> None:
        self.call = ctypes.CDLL(None, use_errno=True).syscall
        self.call.restype = ctypes.c_long


_SYSCALLS = _Syscalls()
# struct __user_cap_header_struct (version 3, pid 0: this thread), three data words
# (effective, permitted, inheritable) for capabilities 0-31 and three for 32-63.
_CAP_VERSION_3 = 0x20080522
_CAP_HEADER = struct.Struct("=Ii")
_CAP_DATA = struct.Struct("=6I")


def _syscall_failed(step: str, where: str, exc: OSError) -> SyscallFailed:
    code = exc.errno or errno.EIO
    return SyscallFailed(f"{step} failed on {where}: {_reason(exc)}", step=step, errno=code)


def quotactl_fd(step: str, fd: int, command: int, qid: int, arg: bytearray, *, where: str) -> None:
    """quotactl_fd(2) on the filesystem of the open ``fd``; ``arg`` is read or filled."""
    try:
        if selected(step):
            raise _injected(step)
        buffer = (ctypes.c_char * len(arg)).from_buffer(arg)
        rc = _SYSCALLS.call(_SYSCALLS.QUOTACTL_FD, fd, ctypes.c_uint(command), qid, buffer)
        if rc != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    except OSError as exc:
        raise _syscall_failed(step, where, exc) from None


def _capabilities(command: int, data: bytearray) -> None:
    header = bytearray(_CAP_HEADER.pack(_CAP_VERSION_3, 0))
    head = (ctypes.c_char * len(header)).from_buffer(header)
    body = (ctypes.c_char * len(data)).from_buffer(data)
    if _SYSCALLS.call(command, head, body) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@contextlib.contextmanager
def capability_set_aside(capability: int) -> Iterator[None]:
    """Within: ``capability`` is out of this thread's effective set (other threads keep
    theirs); it stays permitted, and is put back at the end."""
    step = "capability:set-aside"
    data = bytearray(_CAP_DATA.size)
    try:
        if selected(step):
            raise _injected(step)
        _capabilities(_SYSCALLS.CAPGET, data)
        words = list(_CAP_DATA.unpack(data))
        word, bit = (0, capability) if capability < 32 else (3, capability - 32)
        had = bool(words[word] & (1 << bit))
        words[word] &= ~(1 << bit)
        _capabilities(_SYSCALLS.CAPSET, bytearray(_CAP_DATA.pack(*words)))
    except OSError as exc:
        raise _syscall_failed(step, f"capability {capability}", exc) from None
    try:
        yield
    finally:
        if had:
            words[word] |= 1 << bit
            _capabilities(_SYSCALLS.CAPSET, bytearray(_CAP_DATA.pack(*words)))
