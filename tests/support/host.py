"""Mounts and loop devices, read by the tests themselves from /proc and /sys.

Independent of ``csi.host``, so a bug in the driver's own parsing cannot hide a failure.
Every probe answers only about what a test made: mounts at or under a path of its own,
loop devices backed by a file under its own root or by one of its own images. The machine
may hold other mounts and loop devices (a cluster's, another test run's); nothing here
reads them as a result, so they cannot fail a test.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

SYS_BLOCK = Path("/sys/block")
DELETED = " (deleted)"


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


# -- mounts ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Mount:
    mount_point: str
    options: tuple[str, ...]
    fs_type: str
    source: str


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mount_table() -> list[Mount]:
    found: list[Mount] = []
    # Lines end at "\n" only: a mount point may hold any other character str.splitlines()
    # would break at (mountinfo escapes only space, tab, newline and backslash).
    for line in Path("/proc/self/mountinfo").read_text().split("\n"):
        if not line:
            continue
        left, _, right = line.partition(" - ")
        fields, tail = left.split(" "), right.split(" ")
        found.append(Mount(_unescape(fields[4]), tuple(fields[5].split(",")), tail[0], tail[1]))
    return found


def mounts_at(path: Path | str) -> list[Mount]:
    """The mounts stacked at ``path``."""
    wanted = os.path.realpath(path)
    return [m for m in _mount_table() if m.mount_point == wanted]


def mounts_under(root: Path | str) -> list[str]:
    """Mount points strictly below ``root``."""
    base = os.path.realpath(root)
    return [m.mount_point for m in _mount_table() if m.mount_point.startswith(base + "/")]


def mounts_of(devices: list[str] | set[str]) -> list[Mount]:
    """The mounts whose source is one of ``devices`` (a test's own loop devices)."""
    wanted = set(devices)
    return [m for m in _mount_table() if m.source in wanted]


# -- loop devices ----------------------------------------------------------------------
def _shown_backing(name: str) -> str:
    """The backing file's name as sysfs shows it to this process ("" if unbound or gone)."""
    try:
        return (SYS_BLOCK / name / "loop" / "backing_file").read_text().strip()
    except OSError:
        return ""


def _bound_loops() -> dict[str, str]:
    """Bound loop device -> its backing file's name ("(deleted)" kept). Private: callers
    filter it down to a test's own files before anything is asserted."""
    shown = {f"/dev/{e.name}": _shown_backing(e.name) for e in SYS_BLOCK.glob("loop*")}
    return {device: backing for device, backing in shown.items() if backing}


def loops_for(image: Path | str) -> list[str]:
    """Loop devices bound to the file named ``image`` (deleted since or not)."""
    wanted = os.path.realpath(image)
    return sorted(d for d, b in _bound_loops().items() if b.removesuffix(DELETED) == wanted)


def loops_under(root: Path | str) -> list[str]:
    """Loop devices whose backing file is named under ``root``."""
    base = os.path.realpath(root) + "/"
    return sorted(d for d, b in _bound_loops().items() if b.startswith(base))


def backing_names_under(root: Path | str) -> dict[str, str]:
    """Loop device -> backing file name, for backing files named under ``root``."""
    base = os.path.realpath(root) + "/"
    bound = _bound_loops()
    return {d: b.removesuffix(DELETED) for d, b in bound.items() if b.startswith(base)}


def loop_is_dying(device: str) -> bool:
    """True if ``device``'s detach is pending: ``losetup --detach`` on a device someone
    still has open (udev's blkid probe after an unmount, say) only sets autoclear, and the
    kernel lets go of it when the last opener closes."""
    try:
        return (SYS_BLOCK / Path(device).name / "loop" / "autoclear").read_text().strip() == "1"
    except OSError:
        return False


def live(devices: list[str]) -> list[str]:
    """The devices whose detach has not been asked for. A dying device is held by someone
    else: udev's probe for a moment, or a mount namespace another process
    made (copying our mounts, then never seeing our unmount), which pins the filesystem
    until that process ends. The driver counts such a device as gone (not usable), and so
    do the checks: what it would still hold open, a mount, is checked on its own."""
    return [d for d in devices if not loop_is_dying(d)]


def file_id(path: Path | str) -> tuple[int, int]:
    """(st_dev, st_ino): what a loop device's backing file is, whatever it is called."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def loop_backing_id(device: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of ``device``'s backing file as losetup reads it (LOOP_GET_STATUS64),
    or None if the device is unbound or went away."""
    columns = "NAME,BACK-MAJ:MIN,BACK-INO"
    done = sh("losetup", "--list", "--json", "--output", columns, "--", device)
    if done.returncode != 0 or not done.stdout.strip():
        return None
    for entry in json.loads(done.stdout)["loopdevices"]:
        major, minor = entry["back-maj:min"].strip().split(":")
        return os.makedev(int(major), int(minor)), int(entry["back-ino"])
    return None


def loops_backed_by(identity: tuple[int, int], name: str) -> list[str]:
    """Loop devices whose backing file is the file ``identity`` names, the file being
    called ``name`` (its basename) under whatever mount the kernel shows it through (a
    driver in another mount namespace attached it as ``/images/<name>``). Only devices
    showing that basename are asked for their identity."""
    candidates = [
        d for d, b in _bound_loops().items() if os.path.basename(b.removesuffix(DELETED)) == name
    ]
    return sorted(d for d in candidates if loop_backing_id(d) == identity)


def loop_backing_name(device: str) -> str:
    """The backing file's name as sysfs shows it to this process."""
    return _shown_backing(Path(device).name)


# -- block I/O -------------------------------------------------------------------------
def device_size(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def write_at(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.pwrite(fd, data, offset) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_error(path: Path, offset: int, data: bytes) -> int | None:
    """The errno a write through ``path`` fails with, or None if it succeeds."""
    try:
        write_at(path, offset, data)
    except OSError as exc:
        return exc.errno
    return None


def read_at(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


# -- filesystems -----------------------------------------------------------------------
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878


def is_frozen(mount_point: Path | str) -> bool:
    """True if the filesystem at ``mount_point`` is frozen. Never blocks: FIFREEZE on a
    frozen filesystem fails with EBUSY; on a live one it freezes, and we thaw at once."""
    fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.ioctl(fd, FIFREEZE, 0)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return True
            raise
        fcntl.ioctl(fd, FITHAW, 0)
        return False
    finally:
        os.close(fd)


def thaw(mount_point: Path | str) -> None:
    """Thaw the filesystem at ``mount_point`` if it is frozen (best effort)."""
    try:
        fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        fcntl.ioctl(fd, FITHAW, 0)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_ext4_file(image: Path, name: str) -> bytes:
    """Read ``/name`` from an unmounted ext4 image with debugfs (no mount, no loop)."""
    done = subprocess.run(
        ["debugfs", "-R", f"cat /{name}", str(image)], capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout
