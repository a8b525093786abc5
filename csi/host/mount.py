"""Mount table reads (/proc/self/mountinfo) and mount/umount through util-linux."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from csi.host.run import run

MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class MountEntry:
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


def mounts_at(path: Path | str, mounts: Sequence[MountEntry] | None = None) -> list[MountEntry]:
    """Every mount stacked on exactly ``path`` (innermost last)."""
    target = os.path.normpath(str(path))
    table = read_mounts() if mounts is None else mounts
    return [m for m in table if m.mount_point == target]


def is_mount_point(path: Path | str) -> bool:
    return bool(mounts_at(path))


def mounts_under(path: Path | str, mounts: Sequence[MountEntry] | None = None) -> list[MountEntry]:
    """Mounts on ``path`` or anywhere beneath it."""
    base = os.path.normpath(str(path))
    table = read_mounts() if mounts is None else mounts
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
    options: Sequence[str] = (),
    sensitive: Sequence[str] = (),
) -> None:
    """Mount ``source``; ``sensitive`` lists the caller's flags to keep out of errors."""
    argv = ["mount"]
    if fs_type:
        argv += ["-t", fs_type]
    if options:
        argv += ["-o", ",".join(options)]
    argv += ["--", source, str(target)]
    run(argv, sensitive=sensitive)


def bind_mount(
    source: Path | str,
    target: Path | str,
    *,
    read_only: bool,
    flags: Sequence[str] = (),
    target_fd: int | None = None,
) -> None:
    """Bind ``source`` onto ``target``; then apply ro and per-mount flags by a remount.

    With ``target_fd`` (an O_PATH descriptor of the target) the bind goes through
    /proc/self/fd, which the kernel resolves to that exact file: no path walk to race with.
    Once mounted, the target is a mount point and cannot be renamed away.
    """
    if target_fd is None:
        run(["mount", "--bind", "--", str(source), str(target)])
    else:
        through = f"/proc/self/fd/{target_fd}"
        argv = ["mount", "--bind", "--no-canonicalize", "--", str(source), through]
        run(argv, pass_fds=(target_fd,))
    extra = [f for f in flags if f not in ("bind", "rw", "ro")]
    if read_only or extra:
        options = ["remount", "bind", "ro" if read_only else "rw", *extra]
        try:
            run(["mount", "-o", ",".join(options), "--", str(target)], sensitive=extra)
        except Exception:
            unmount(target)
            raise


def unmount(target: Path | str) -> None:
    """Unmount every mount stacked on ``target``; a no-op if nothing is mounted."""
    while is_mount_point(target):
        run(["umount", "--", str(target)])
