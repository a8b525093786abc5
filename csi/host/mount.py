"""Mount table reads (/proc/self/mountinfo); mounts and unmounts through csi.host.kernel."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from csi.host import kernel, mountopts
from csi.host.errors import MountFailed, MountOptionsRefused
from csi.host.mountopts import MS_BIND

MOUNTINFO = Path("/proc/self/mountinfo")


class MountEntry(NamedTuple):
    """One line of mountinfo (a tuple: a node's table holds every pod's mounts, and a
    tuple is made several times faster than a frozen dataclass)."""

    mount_id: int
    parent_id: int
    device: str  # "major:minor"
    root: str  # path inside the mounted filesystem
    mount_point: str
    options: tuple[str, ...]
    fs_type: str
    source: str
    super_options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def _escape(path: str) -> str:
    """``path`` as mountinfo prints it."""
    for char in "\\ \t\n":  # the backslash first
        path = path.replace(char, f"\\{ord(char):03o}")
    return path


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries: list[MountEntry] = []
    # Only "\n" ends a line: the kernel escapes space, tab, newline and backslash in paths
    # but nothing else, and str.splitlines() would also break at \x1c-\x1e, \x85, \u2028...
    for line in text.split("\n"):
        if not line:
            continue
        left, _, right = line.partition(" - ")
        fields = left.split(" ")
        tail = right.split(" ")
        if len(fields) < 6 or len(tail) < 3:
            continue
        entries.append(
            MountEntry(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                device=fields[2],
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                options=tuple(fields[5].split(",")),
                fs_type=tail[0],
                source=_unescape(tail[1]),
                super_options=tuple(tail[2].split(",")),
            )
        )
    return entries


def read_mounts() -> list[MountEntry]:
    return parse_mountinfo(MOUNTINFO.read_text())


def read_mounts_naming(*paths: str) -> list[MountEntry]:
    """The lines of the table that name one of ``paths`` or a path below one, parsed: a
    question about a few places parses a few lines, not every pod's mounts on the node.
    No paths, no reading."""
    if not paths:
        return []
    needles = [f" {_escape(os.path.normpath(path))}" for path in paths]
    text = MOUNTINFO.read_text()
    lines = (line for line in text.split("\n") if any(n in line for n in needles))
    return parse_mountinfo("\n".join(lines))


def mounts_at(path: Path | str, mounts: Sequence[MountEntry] | None = None) -> list[MountEntry]:
    """Every mount stacked on exactly ``path`` (innermost last)."""
    target = os.path.normpath(str(path))
    table = read_mounts_naming(target) if mounts is None else mounts
    return [m for m in table if m.mount_point == target]


def is_mount_point(path: Path | str) -> bool:
    return bool(mounts_at(path))


def mounts_under(path: Path | str, mounts: Sequence[MountEntry] | None = None) -> list[MountEntry]:
    """Mounts on ``path`` or anywhere beneath it."""
    base = os.path.normpath(str(path))
    table = read_mounts_naming(base) if mounts is None else mounts
    return [m for m in table if m.mount_point == base or m.mount_point.startswith(base + "/")]


def mounts_of_device(device: str, mounts: Sequence[MountEntry] | None = None) -> list[MountEntry]:
    """Mounts of a block device: its filesystem, or binds of the device node itself."""
    name = device.removeprefix("/dev/")
    table = read_mounts() if mounts is None else mounts
    return [
        m for m in table if m.source == device or (m.fs_type == "devtmpfs" and m.root == f"/{name}")
    ]


def mount(
    source: str,
    target: Path | str,
    *,
    fs_type: str | None = None,
    read_only: bool,
    options: Sequence[str] = (),
    sensitive: Sequence[str] = (),
) -> None:
    """Mount the filesystem on ``source`` (a device) at ``target``: ``options`` are read as
    mount(8) reads them (csi.host.mountopts), except ``ro`` and ``rw``: ``read_only``
    decides. ``sensitive`` lists the caller's options; errors never show any option, so
    they need no redaction."""
    parsed = mountopts.for_filesystem(options).with_access(read_only)
    target = str(target)
    try:
        kernel.mount("mount:fs", source, target, fs_type, parsed.set_flags, parsed.data_string)
    except MountFailed as failed:
        if failed.errno == errno.EINVAL and set(parsed.data) & set(sensitive):
            raise MountOptionsRefused(
                f"mount failed at {target}: the kernel refused the mount (EINVAL): "
                f"{fs_type or 'the filesystem'} did not accept the mount flags given (or it is "
                "damaged)",
                step=failed.step,
                errno=failed.errno,
            ) from None
        raise
    try:
        _propagate(target, parsed)
    except BaseException:
        unmount(target)
        raise


def bind_mount(
    source: Path | str,
    target: Path | str,
    *,
    read_only: bool,
    flags: Sequence[str] = (),
    target_fd: int | None = None,
    refuse_fs_options: bool = False,
) -> None:
    """Bind ``source`` onto ``target``; then apply ro and per-mount flags by a remount.

    ``flags`` are read as mount(8) reads them: per-mount flags and propagation apply, ``ro``
    and ``rw`` are ignored (``read_only`` decides), filesystem options do not reach a bind
    (ignored, or refused before anything is mounted with ``refuse_fs_options``). With
    ``target_fd`` (an O_PATH descriptor of the target) the bind goes through
    /proc/self/fd, which the kernel resolves to that exact file: no path walk to race with.
    Once mounted, the target is a mount point and cannot be renamed away.
    """
    parsed = mountopts.for_bind(flags, refuse_data=refuse_fs_options).with_access(read_only)
    through = str(target) if target_fd is None else f"/proc/self/fd/{target_fd}"
    kernel.mount("mount:bind", str(source), through, None, MS_BIND, what=f"of {source}")
    try:
        if parsed.set_flags or parsed.cleared:
            current = mountopts.flags_from_statvfs(os.statvfs(target).f_flag)
            wanted = mountopts.remount_flags(current, parsed)
            kernel.mount("mount:remount", None, str(target), None, wanted)
        _propagate(str(target), parsed)
    except BaseException:
        unmount(target)
        raise


def _propagate(target: str, parsed: mountopts.MountOptions) -> None:
    for change in parsed.propagation:
        kernel.mount("mount:propagation", None, target, None, change)


def unmount(target: Path | str) -> None:
    """Unmount every mount stacked on ``target``; a no-op if nothing is mounted."""
    path = str(target)
    while kernel.umount(path, is_mounted=lambda: is_mount_point(path)):
        pass
