"""Mount options as util-linux's mount(8) reads them: MS_* flags, filesystem data, and the
options it keeps to itself.

An option list (``["ro", "noatime", "errors=remount-ro"]``) splits three ways:

- **flags**: names mount(8) turns into ``mount(2)`` flags (``ro``, ``nosuid``, ``noatime``,
  ``bind``...). Each one sets or clears its bit, later options overriding earlier ones, so
  ``ro,rw`` is writable and ``noexec,exec`` executable, as in mount(8).
- **propagation**: ``shared``, ``private``, ``slave``, ``unbindable`` and their recursive
  ``r`` forms; mount(8) applies these with a call of their own after the mount.
- **data**: everything else, handed to the filesystem as the data string (ext4's
  ``errors=remount-ro``, xfs's ``nouuid``, SELinux's ``context=``); the filesystem, not this
  parser, decides whether it knows them.

Options mount(8) consumes in userspace (``defaults``, ``auto``, ``noauto``, ``nofail``,
``_netdev``, ``user``/``users``/``owner``/``group`` as root sees them, ``comment=``, ``x-*``)
reach no call. Options that ask mount(8) for work this layer does itself (``loop``,
``offset=``, ``sizelimit=``, ``encryption=``, ``move``, ``helper=``) are refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from csi.host.errors import InvalidMountOption

# mount(2) flags (linux/mount.h).
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_I_VERSION = 1 << 23
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

# name -> (bit, set it?): the flag options of mount(8).
FLAG_OPTIONS: dict[str, tuple[int, bool]] = {
    "ro": (MS_RDONLY, True),
    "rw": (MS_RDONLY, False),
    "nosuid": (MS_NOSUID, True),
    "suid": (MS_NOSUID, False),
    "nodev": (MS_NODEV, True),
    "dev": (MS_NODEV, False),
    "noexec": (MS_NOEXEC, True),
    "exec": (MS_NOEXEC, False),
    "sync": (MS_SYNCHRONOUS, True),
    "async": (MS_SYNCHRONOUS, False),
    "dirsync": (MS_DIRSYNC, True),
    "mand": (MS_MANDLOCK, True),
    "nomand": (MS_MANDLOCK, False),
    "noatime": (MS_NOATIME, True),
    "atime": (MS_NOATIME, False),
    "nodiratime": (MS_NODIRATIME, True),
    "diratime": (MS_NODIRATIME, False),
    "relatime": (MS_RELATIME, True),
    "norelatime": (MS_RELATIME, False),
    "strictatime": (MS_STRICTATIME, True),
    "nostrictatime": (MS_STRICTATIME, False),
    "lazytime": (MS_LAZYTIME, True),
    "nolazytime": (MS_LAZYTIME, False),
    "iversion": (MS_I_VERSION, True),
    "noiversion": (MS_I_VERSION, False),
    "nosymfollow": (MS_NOSYMFOLLOW, True),
    "symfollow": (MS_NOSYMFOLLOW, False),
    "silent": (MS_SILENT, True),
    "loud": (MS_SILENT, False),
    "remount": (MS_REMOUNT, True),
    "bind": (MS_BIND, True),
    "rbind": (MS_BIND | MS_REC, True),
}
PROPAGATION_OPTIONS: dict[str, int] = {
    "shared": MS_SHARED,
    "private": MS_PRIVATE,
    "slave": MS_SLAVE,
    "unbindable": MS_UNBINDABLE,
    "rshared": MS_SHARED | MS_REC,
    "rprivate": MS_PRIVATE | MS_REC,
    "rslave": MS_SLAVE | MS_REC,
    "runbindable": MS_UNBINDABLE | MS_REC,
}
# Consumed by mount(8) itself; as root they change nothing the kernel sees.
USERSPACE_OPTIONS = frozenset(
    {"defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users"}
    | {"owner", "noowner", "group", "nogroup"}
)
USERSPACE_PREFIXES = ("comment=", "x-", "X-")
# Work mount(8) would do for the caller; here the driver does it, so they are refused.
REFUSED_OPTIONS = frozenset({"loop", "move", "rmove"})
REFUSED_PREFIXES = ("loop=", "offset=", "sizelimit=", "encryption=", "helper=", "uhelper=")

# The flags that choose the kind of call rather than describe the mount.
OPERATION_FLAGS = MS_REMOUNT | MS_BIND | MS_REC | MS_MOVE
# The per-mount flags a bind remount sets (the rest of the mount's flags are its superblock's).
PER_MOUNT_FLAGS = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOSYMFOLLOW
ATIME_MODES = MS_NOATIME | MS_RELATIME | MS_STRICTATIME
ATIME_FLAGS = ATIME_MODES | MS_NODIRATIME
# statvfs f_flag bits -> the mount flag each one reports (ST_RELATIME is not MS_RELATIME).
STATVFS_FLAGS: tuple[tuple[int, int], ...] = (
    (os.ST_RDONLY, MS_RDONLY),
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
    (0x2000, MS_NOSYMFOLLOW),  # ST_NOSYMFOLLOW (Linux 5.10)
)


@dataclass(frozen=True)
class MountOptions:
    """An option list, parsed: ``set_flags`` and ``cleared`` are the MS_* bits the options
    set and clear (the last word on a bit wins), ``propagation`` the propagation changes in
    order, ``data`` the filesystem's options in order."""

    set_flags: int = 0
    cleared: int = 0
    propagation: tuple[int, ...] = ()
    data: tuple[str, ...] = ()

    @property
    def data_string(self) -> str | None:
        return ",".join(self.data) if self.data else None

    def apply(self, flags: int) -> int:
        """``flags`` with these options' bits set and cleared."""
        return (flags & ~self.cleared) | self.set_flags

    @property
    def read_only(self) -> bool:
        return bool(self.set_flags & MS_RDONLY)

    def with_access(self, read_only: bool) -> MountOptions:
        """These options with read-only or not decided by ``read_only`` (the volume's
        access mode), never by an ``ro`` or ``rw`` among them: a read-only volume stays
        read-only whatever flags a class or claim adds."""
        return MountOptions(
            (self.set_flags & ~MS_RDONLY) | (MS_RDONLY if read_only else 0),
            self.cleared & ~MS_RDONLY,
            self.propagation,
            self.data,
        )


def _position(index: int, total: int) -> str:
    return f"mount option {index + 1} of {total}"


def parse_options(options: Sequence[str]) -> MountOptions:
    """Split ``options`` as mount(8) would (see the module docstring). Raises
    InvalidMountOption for an empty option, one holding a NUL byte, or one this layer
    refuses; the message names the option by position, never by its text."""
    set_flags = cleared = 0
    propagation: list[int] = []
    data: list[str] = []
    total = len(options)
    for index, option in enumerate(options):
        if not option or "\x00" in option:
            raise InvalidMountOption(f"{_position(index, total)} is empty or holds a NUL byte")
        if option in FLAG_OPTIONS:
            bit, on = FLAG_OPTIONS[option]
            if on:
                set_flags, cleared = set_flags | bit, cleared & ~bit
            else:
                set_flags, cleared = set_flags & ~bit, cleared | bit
        elif option in PROPAGATION_OPTIONS:
            propagation.append(PROPAGATION_OPTIONS[option])
        elif option in USERSPACE_OPTIONS or option.startswith(USERSPACE_PREFIXES):
            continue
        elif option in REFUSED_OPTIONS or option.startswith(REFUSED_PREFIXES):
            raise InvalidMountOption(
                f"{_position(index, total)} asks mount(8) to set up a loop device or move a "
                "mount; the driver does that itself and does not take it as an option"
            )
        else:
            data.append(option)
    return MountOptions(set_flags, cleared, tuple(propagation), tuple(data))


def for_bind(options: Sequence[str], *, refuse_data: bool = False) -> MountOptions:
    """Options for a bind mount: per-mount flags and propagation. A bind carries no
    filesystem options: mount(8) hands them to a bind remount, where the kernel ignores
    them, and so are they here (they apply where the filesystem itself is mounted, a loop
    volume's stage); with ``refuse_data`` (no filesystem mount will ever see them) they
    are refused instead. Flags that would change the kind of call (remount, rbind) are
    refused; ``bind`` is what the caller makes anyway."""
    parsed = parse_options(options)
    for index, option in enumerate(options):
        bit = FLAG_OPTIONS.get(option, (0, False))[0]
        if option != "bind" and bit & OPERATION_FLAGS:
            raise InvalidMountOption(
                f"{_position(index, len(options))} changes the kind of mount (remount, "
                "rbind); the driver chooses that"
            )
    if parsed.data and refuse_data:
        index = _first_data_index(options)
        raise InvalidMountOption(
            f"{_position(index, len(options))} is not a mount flag, and a bind mount cannot "
            "pass filesystem options on"
        )
    return MountOptions(
        parsed.set_flags & ~MS_BIND, parsed.cleared & ~MS_BIND, parsed.propagation, parsed.data
    )


def for_filesystem(options: Sequence[str]) -> MountOptions:
    """Options for mounting a filesystem from a device: flags, propagation and data; the
    operation flags (remount, bind, rbind) are refused: the caller chose a new mount."""
    parsed = parse_options(options)
    for index, option in enumerate(options):
        bit = FLAG_OPTIONS.get(option, (0, False))[0]
        if bit & OPERATION_FLAGS:
            raise InvalidMountOption(
                f"{_position(index, len(options))} turns the mount of a filesystem into a "
                "remount or a bind; the driver chooses that"
            )
    return parsed


def _first_data_index(options: Sequence[str]) -> int:
    for index, option in enumerate(options):
        if option in FLAG_OPTIONS or option in PROPAGATION_OPTIONS:
            continue
        if option in USERSPACE_OPTIONS or option.startswith(USERSPACE_PREFIXES):
            continue
        return index
    return 0


def flags_from_statvfs(f_flag: int) -> int:
    """The MS_* flags a mount reports through statvfs's ``f_flag``."""
    return sum(ms for st, ms in STATVFS_FLAGS if f_flag & st)


def remount_flags(current: int, options: MountOptions) -> int:
    """The flags of a bind remount (MS_REMOUNT|MS_BIND): the mount's ``current`` per-mount
    and atime flags (from statvfs) with ``options`` applied, as mount(8) computes them, so
    a remount to read-only keeps the nosuid or nodev the mount already had."""
    kept = current & (PER_MOUNT_FLAGS | ATIME_FLAGS)
    if options.set_flags & ATIME_MODES:
        kept &= ~ATIME_MODES  # one atime mode: the one asked for replaces the mount's
    return MS_REMOUNT | MS_BIND | options.apply(kept)
