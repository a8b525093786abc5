"""Loop devices: find by backing file (sysfs, no fork), attach and detach (losetup)."""

from __future__ import annotations

import os
from pathlib import Path

from csi.host.run import run

SYS_BLOCK = Path("/sys/block")
DELETED_SUFFIX = " (deleted)"


def _backing_file(name: str) -> str | None:
    try:
        text = (SYS_BLOCK / name / "loop" / "backing_file").read_text().rstrip("\n")
    except OSError:
        return None
    return text.removesuffix(DELETED_SUFFIX)


def attached() -> dict[str, str]:
    """Map of loop device path -> backing file for every attached loop device."""
    result: dict[str, str] = {}
    try:
        names = os.listdir(SYS_BLOCK)
    except OSError:
        return result
    for name in names:
        if not name.startswith("loop"):
            continue
        backing = _backing_file(name)
        if backing:
            result[f"/dev/{name}"] = backing
    return result


def devices_for(backing_file: Path) -> list[str]:
    """Loop devices currently backed by ``backing_file`` (normally zero or one)."""
    wanted = os.path.realpath(backing_file)
    return sorted(dev for dev, backing in attached().items() if backing == wanted)


def attach(backing_file: Path, *, read_only: bool = False) -> str:
    """Attach ``backing_file`` to a free loop device, reusing one already attached to it."""
    existing = devices_for(backing_file)
    if existing:
        return existing[0]
    argv = ["losetup", "--find", "--show", "--nooverlap"]
    if read_only:
        argv.append("--read-only")
    argv.append(str(backing_file))
    return run(argv).stdout.strip()


def detach(device: str) -> None:
    run(["losetup", "--detach", device], ok_codes=(0,))


def detach_all(backing_file: Path) -> None:
    for device in devices_for(backing_file):
        detach(device)


def refresh_size(device: str) -> None:
    run(["losetup", "--set-capacity", device])


def device_size(device: str) -> int:
    name = os.path.basename(device)
    sectors = int((SYS_BLOCK / name / "size").read_text())
    return sectors * 512
