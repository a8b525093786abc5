"""Loop devices: find by backing file (sysfs, no fork), attach and detach (losetup).

A device whose backing file was deleted (sysfs appends " (deleted)") or that was detached
while busy (the kernel sets autoclear and frees it on last close) is never reused: it
belongs to the past, not to the file now at that path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from csi.host.run import run

SYS_BLOCK = Path("/sys/block")
DELETED_SUFFIX = " (deleted)"


@dataclass(frozen=True)
class LoopDevice:
    path: str  # /dev/loopN
    backing_file: str  # as sysfs shows it, " (deleted)" included
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


def _device(name: str) -> LoopDevice | None:
    base = SYS_BLOCK / name
    backing = _read(base / "loop" / "backing_file")
    if not backing:
        return None
    return LoopDevice(
        path=f"/dev/{name}",
        backing_file=backing,
        read_only=_read(base / "ro") == "1",
        dying=_read(base / "loop" / "autoclear") == "1",
    )


def all_devices() -> list[LoopDevice]:
    try:
        names = os.listdir(SYS_BLOCK)
    except OSError:
        return []
    found = (_device(n) for n in names if n.startswith("loop"))
    return [d for d in found if d is not None]


def attached() -> dict[str, str]:
    """Map of loop device path -> backing file (as sysfs shows it) for every loop device."""
    return {d.path: d.backing_file for d in all_devices()}


def devices_for(backing_file: Path, *, read_only: bool | None = False) -> list[str]:
    """Usable loop devices backed by ``backing_file``: writable ones by default,
    read-only ones with ``read_only=True``, all with ``read_only=None``."""
    wanted = os.path.realpath(backing_file)
    return sorted(
        d.path
        for d in all_devices()
        if d.backing_file == wanted and d.usable and (read_only is None or d.read_only == read_only)
    )


def attach(backing_file: Path, *, read_only: bool = False) -> str:
    """Attach ``backing_file`` to a free loop device. Reuse is the caller's policy
    (csi.volumes.loop), and so is serialising: concurrent `losetup --find` calls collide."""
    argv = ["losetup", "--find", "--show"]
    if read_only:
        argv.append("--read-only")
    argv.append(str(backing_file))
    return run(argv).stdout.strip()


def detach(device: str) -> None:
    run(["losetup", "--detach", device])


def is_read_only(device: str) -> bool:
    return _read(SYS_BLOCK / os.path.basename(device) / "ro") == "1"


def refresh_size(device: str) -> None:
    run(["losetup", "--set-capacity", device])


def device_size(device: str) -> int:
    name = os.path.basename(device)
    sectors = int((SYS_BLOCK / name / "size").read_text())
    return sectors * 512
