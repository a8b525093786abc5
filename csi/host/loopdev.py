"""Loop devices: found by their backing file's identity, attached, detached and resized
through the ioctls of csi.host.kernel (no fork).

A loop device is never *identified* by its backing file's name. The kernel prints that
name (sysfs ``loop/backing_file``, ``losetup --list``) relative to the mount it was
attached through: a device attached by a driver that reached the data dir through its
container's bind mount reads ``/images/vol-….img`` once that container is gone, and a
lookup by path in the next driver missed it (an unstage that left it attached, a stage
that attached a second device to the same image: two mounts of one filesystem). Instead
the LOOP_GET_STATUS64 ioctl (kernel.loop_status) reports the backing file's device and
inode number, the same through every bind mount of its filesystem (each container's
hostPath), and a device is the image's when they equal the image's ``os.stat``.

Only devices whose shown name *ends* with the image's file name are opened to ask: a path
relative to some mount still ends with the file's own name (the kernel builds it from the
file's dentry, and follows renames), so no device of the image is skipped unless someone
attached it through another hard link or a bind mount of the file itself. Opening every
loop device instead would make the driver an opener of devices that are not its own (snaps,
other drivers): a detach of theirs would then wait for our close, and the
ioctl would block on a backing file whose network filesystem hangs.

A device whose backing file was deleted (sysfs appends " (deleted)", relative name or not)
or that was detached while busy (the kernel sets autoclear and frees it on last close) is
never reused or matched, and not even opened: it belongs to the past, not to the file now
at that path. Inode numbers are unique among the live files of a filesystem and a device
pins its file, so a new image cannot share the inode number of a deleted image a device
still holds; refusing deleted backing files too keeps that true on filesystems whose inode
numbers are not so stable (FUSE, some network filesystems), and keeps the rule readable
without that proof.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from csi.host import kernel
from csi.host.errors import LoopDeviceUnreadable, LoopFailed

SYS_BLOCK = Path("/sys/block")
DEV = Path("/dev")
DELETED_SUFFIX = " (deleted)"
# How long a detach waits for a brief opener to close the device (see detach).
DETACH_WAIT = 0.5

LOOP_GET_STATUS64 = kernel.LOOP_GET_STATUS64
# struct loop_info64 (linux/loop.h): lo_device, lo_inode, lo_rdevice, lo_offset and
# lo_sizelimit (__u64); lo_number, lo_encrypt_type, lo_encrypt_key_size and lo_flags (__u32);
# lo_file_name[64], lo_crypt_name[64], lo_encrypt_key[32] (__u8); lo_init[2] (__u64).
# (The layout is kernel.py's: attaching fills the same structure.)
LOOP_INFO64 = kernel.LOOP_INFO64
LO_FLAGS_READ_ONLY = kernel.LO_FLAGS_READ_ONLY
LO_FLAGS_AUTOCLEAR = kernel.LO_FLAGS_AUTOCLEAR
# The device is unbound, being torn down, or gone (removed, or no node for it in /dev).
_GONE = (errno.ENXIO, errno.ENODEV, errno.ENOENT)
# How often a device found unbound, yet bound again when sysfs is read back, is asked again.
STATUS_LOOKS = 3


@dataclass(frozen=True)
class FileId:
    """A file's identity on this host: the ``st_dev`` and ``st_ino`` of ``os.stat``."""

    dev: int
    ino: int

    @classmethod
    def of(cls, path: Path | str) -> FileId | None:
        """The identity of the file at ``path`` (symlinks followed, as losetup does), or
        None if there is none."""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return cls(st.st_dev, st.st_ino)


def decode_dev(encoded: int) -> int:
    """``lo_device`` as an ``st_dev``: the kernel fills it with huge_encode_dev(), i.e.
    new_encode_dev() (major in bits 8-19, minor in bits 0-7 and 20-31); decoded to
    (major, minor) and rebuilt with os.makedev so it compares with any libc's st_dev.
    (glibc's makedev agrees with new_encode_dev for every 12-bit major and 20-bit minor
    the kernel makes, so on glibc this is the identity; it stays explicit, not assumed.)"""
    encoded &= 0xFFFFFFFF
    major = (encoded & 0xFFF00) >> 8
    minor = (encoded & 0xFF) | ((encoded >> 12) & 0xFFF00)
    return os.makedev(major, minor)


@dataclass(frozen=True)
class LoopDevice:
    path: str  # /dev/loopN
    backing: FileId  # the backing file, from LOOP_GET_STATUS64
    backing_file: str  # its name as sysfs shows it (relative to some mount), for messages
    read_only: bool
    dying: bool  # detach requested while busy: goes away on last close

    @property
    def usable(self) -> bool:
        return not self.dying and not self.backing_file.endswith(DELETED_SUFFIX)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().rstrip("\n")
    except OSError:
        return None


def _status(device: str) -> tuple[FileId, int]:
    """(backing file, lo_flags) of a bound device; LoopFailed (step ``loop:status``) with
    the errno the open or the ioctl got."""
    fields = LOOP_INFO64.unpack(kernel.loop_status(device))
    return FileId(decode_dev(fields[0]), fields[1]), fields[8]


def _shown_names() -> dict[str, str]:
    """Loop device name -> its backing file's name as sysfs shows it, for bound devices."""
    try:
        names = os.listdir(SYS_BLOCK)
    except OSError:
        return {}
    loops = sorted(n for n in names if n.startswith("loop"))
    shown = {n: _read(SYS_BLOCK / n / "loop" / "backing_file") for n in loops}
    return {n: b for n, b in shown.items() if b}  # loop/ exists only while a file is bound


def _identify(name: str, *, dying_too: bool = False) -> LoopDevice | None:
    """The bound loop device ``name`` with its backing file's identity, or None if it has
    none (unbound, being torn down, removed while we looked) or, unless ``dying_too``, if
    its detach is pending (opening it would only delay its end)."""
    loop = SYS_BLOCK / name / "loop"
    if not dying_too and _read(loop / "autoclear") == "1":
        return None
    path = str(DEV / name)
    problem = ""
    for _ in range(STATUS_LOOKS):
        try:
            backing, flags = _status(path)
            break
        except LoopFailed as failed:
            problem = failed.message
            if failed.errno not in _GONE:
                unreadable = f"cannot identify the backing file of {path}: {problem}"
                raise LoopDeviceUnreadable(unreadable) from None
            if not _read(loop / "backing_file"):
                return None  # detached or removed between the two reads
            # Unbound when asked, bound again since: an attach beside us took the freed
            # device. Ask again, a few times; one that never holds still is not guessed at.
    else:
        raise LoopDeviceUnreadable(
            f"cannot identify the backing file of {path}: {problem} "
            f"(bound again each of {STATUS_LOOKS} times it was found unbound)"
        )
    shown = _read(loop / "backing_file")  # read again: the one that goes with the identity
    if not shown:
        return None
    return LoopDevice(
        path=path,
        backing=backing,
        backing_file=shown,
        read_only=bool(flags & LO_FLAGS_READ_ONLY),
        dying=bool(flags & LO_FLAGS_AUTOCLEAR),
    )


def all_devices() -> list[LoopDevice]:
    """Every bound loop device with its backing file's identity, dying and deleted ones
    included. Opens each one: for inspection (tests, tools); the driver's own lookups go
    through LoopTable, which opens only candidates."""
    found = (_identify(name, dying_too=True) for name in _shown_names())
    return [d for d in found if d is not None]


class LoopTable:
    """One reading of which loop devices are bound (sysfs only); each candidate device is
    opened at most once, when a lookup first needs it. Short-lived: one RPC or one pass."""

    def __init__(self, shown: dict[str, str]) -> None:
        self._shown = shown
        self._identified: dict[str, LoopDevice | None] = {}

    @classmethod
    def read(cls) -> LoopTable:
        return cls(_shown_names())

    def file_names(self) -> set[str]:
        """The last part of every backing file's name the table shows: a file whose name is
        not among them has no device here (devices_of would find none)."""
        return {shown.rpartition("/")[2] for shown in self._shown.values()}

    def devices_of(self, image: Path | str, *, read_only: bool | None = False) -> list[str]:
        """Usable loop devices of the file at ``image``, by identity: writable ones by
        default, read-only ones with ``read_only=True``, all with ``read_only=None``."""
        wanted = FileId.of(image)
        if wanted is None:
            return []  # no file, no device of it: a deleted file's devices are not usable
        suffix = "/" + os.path.basename(image)
        found: list[str] = []
        for name, shown in self._shown.items():
            if not shown.endswith(suffix):
                continue  # not this file under any mount's name for it (or deleted)
            if name not in self._identified:
                self._identified[name] = _identify(name)
            device = self._identified[name]
            if device is None or device.backing != wanted or not device.usable:
                continue
            if read_only is None or device.read_only == read_only:
                found.append(device.path)
        return sorted(found)


def devices_for(image: Path | str, *, read_only: bool | None = False) -> list[str]:
    """Usable loop devices of the file at ``image``, from a fresh reading (see LoopTable)."""
    if FileId.of(image) is None:
        return []
    return LoopTable.read().devices_of(image, read_only=read_only)


def stacked_on(device: str) -> list[str]:
    """Loop devices whose backing file is the device node ``device`` itself (the kubelet
    stacks one on a published raw block device to hold it), dying ones included. Opens every
    bound loop device: only for a raw block volume being unstaged or deleted."""
    wanted = FileId.of(device)
    if wanted is None:
        return []
    return sorted(d.path for d in all_devices() if d.backing == wanted)


def attach(backing_file: Path, *, read_only: bool = False) -> str:
    """Attach ``backing_file`` to a free loop device (LOOP_CTL_GET_FREE, LOOP_CONFIGURE).
    Reuse is the caller's policy (csi.volumes.loop), and so is serialising: the kernel may
    hand two concurrent callers the same free device (the loser retries, see kernel.py)."""
    return kernel.loop_attach(str(backing_file), read_only=read_only)


class ScratchDevice:
    """A loop device for the driver's own brief work on an image (setting up a new
    filesystem), gone by itself once nothing holds it: bound with autoclear and held open
    until ``release``. Released, it goes with its last close; if the driver dies first, the
    process's descriptors close and it goes then, or, were it mounted, when start-up
    reconciliation undoes the mount. No later pass has to find it, which after the image's
    removal would mean matching a deleted file."""

    def __init__(self, backing_file: Path) -> None:
        self.backing_file = backing_file
        self.device, self._fd = kernel.loop_attach_held(str(backing_file))

    def release(self) -> None:
        kernel.loop_close(self._fd)
        loop = SYS_BLOCK / os.path.basename(self.device) / "loop"
        # A probe that opened it meanwhile keeps it a moment: it goes at that close.
        backing = str(self.backing_file)
        _wait_while(lambda: (_read(loop / "backing_file") or "").startswith(backing))


def detach(device: str) -> None:
    """LOOP_CLR_FD; a device still open elsewhere is freed by the kernel at its last close.

    Brief openers are common: a concurrent ``losetup --find`` handed the same free device
    holds it open through its 200 ms back-off, a probe reads it. So a detach the kernel
    could only mark pending waits up to DETACH_WAIT for that close, and callers see the
    device gone in the usual case; a lasting opener (a pod) leaves it pending, as before.
    """
    kernel.loop_detach(device)
    loop = SYS_BLOCK / os.path.basename(device) / "loop"
    _wait_while(lambda: _read(loop / "autoclear") == "1" and bool(_read(loop / "backing_file")))


def _wait_while(pending: Callable[[], bool]) -> None:
    """Poll ``pending`` until it is false or DETACH_WAIT has passed (a device another
    opener holds goes at that opener's close; a lasting one is left pending)."""
    deadline = time.monotonic() + DETACH_WAIT
    while pending() and time.monotonic() < deadline:
        time.sleep(0.005)


def is_read_only(device: str) -> bool:
    return _read(SYS_BLOCK / os.path.basename(device) / "ro") == "1"


def refresh_size(device: str) -> None:
    kernel.loop_set_capacity(device)


def device_size(device: str) -> int:
    name = os.path.basename(device)
    sectors = int((SYS_BLOCK / name / "size").read_text())
    return sectors * 512
