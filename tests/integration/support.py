"""Helpers for the integration tier: a kubelet-like caller and independent host probes.

The host probes read /proc/self/mountinfo and /sys/block directly (and ask losetup for
backing-file identities) instead of going through ``csi.host``, so a bug in the driver's
own parsing cannot hide a failure here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from csi.pb import csi_pb2
from tests.helpers import Client, block_capability, mount_capability

MIB = 1024 * 1024
Mode = csi_pb2.VolumeCapability.AccessMode
MULTI_WRITER = Mode.SINGLE_NODE_MULTI_WRITER
SINGLE_WRITER = Mode.SINGLE_NODE_SINGLE_WRITER
READER_ONLY = Mode.SINGLE_NODE_READER_ONLY


@dataclass(frozen=True)
class Flavour:
    """One kind of volume: its StorageClass parameters, a size, and how it is consumed."""

    id: str
    params: Mapping[str, str]
    size: int
    fs_type: str = ""  # ext4 or xfs for formatted loop volumes
    block: bool = False

    def cap(
        self, mode: int = MULTI_WRITER, flags: tuple[str, ...] = ()
    ) -> csi_pb2.VolumeCapability:
        return block_capability(mode) if self.block else mount_capability(mode=mode, flags=flags)


EXT4 = Flavour("ext4", {"volumeType": "loop", "fsType": "ext4"}, 64 * MIB, fs_type="ext4")
# 300 MiB is the smallest xfs that xfsprogs accepts.
XFS = Flavour("xfs", {"volumeType": "loop", "fsType": "xfs"}, 300 * MIB, fs_type="xfs")
DIRECTORY = Flavour("directory", {"volumeType": "directory"}, 8 * MIB)
BLOCK = Flavour("block", {"volumeType": "loop"}, 32 * MIB, block=True)


# -- host probes ---------------------------------------------------------------------
@dataclass(frozen=True)
class Mount:
    mount_point: str
    options: tuple[str, ...]
    fs_type: str
    source: str


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts() -> list[Mount]:
    found: list[Mount] = []
    for line in Path("/proc/self/mountinfo").read_text().split("\n"):
        if not line:
            continue
        left, _, right = line.partition(" - ")
        fields, tail = left.split(" "), right.split(" ")
        found.append(Mount(_unescape(fields[4]), tuple(fields[5].split(",")), tail[0], tail[1]))
    return found


def mounts_at(path: Path | str) -> list[Mount]:
    wanted = os.path.realpath(path)
    return [m for m in mounts() if m.mount_point == wanted]


def mounts_under(root: Path) -> list[str]:
    base = os.path.realpath(root)
    return [m.mount_point for m in mounts() if m.mount_point.startswith(base + "/")]


def loop_devices() -> dict[str, str]:
    """Attached loop device -> its backing file, read from sysfs."""
    result: dict[str, str] = {}
    for entry in Path("/sys/block").glob("loop*"):
        try:
            backing = (entry / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing:
            result[f"/dev/{entry.name}"] = backing.removesuffix(" (deleted)")
    return result


def loops_for(image: Path) -> list[str]:
    wanted = os.path.realpath(image)
    return sorted(dev for dev, backing in loop_devices().items() if backing == wanted)


def loops_under(root: Path) -> list[str]:
    base = os.path.realpath(root) + "/"
    return sorted(dev for dev, backing in loop_devices().items() if backing.startswith(base))


def file_id(path: Path | str) -> tuple[int, int]:
    """(st_dev, st_ino): what a loop device's backing file is, whatever it is called."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def loop_backing_ids() -> dict[str, tuple[int, int, str]]:
    """Attached loop device -> (st_dev, st_ino, name) of its backing file, as losetup reads
    them (LOOP_GET_STATUS64); the name is the kernel's, relative to some mount or not."""
    columns = "NAME,BACK-MAJ:MIN,BACK-INO,BACK-FILE"
    done = sh("losetup", "--list", "--json", "--output", columns)
    assert done.returncode == 0, done.stderr
    if not done.stdout.strip():
        return {}
    found: dict[str, tuple[int, int, str]] = {}
    for device in json.loads(done.stdout)["loopdevices"]:
        major, minor = device["back-maj:min"].strip().split(":")
        dev = os.makedev(int(major), int(minor))
        found[device["name"]] = (dev, int(device["back-ino"]), device["back-file"])
    return found


def loops_backed_by(identity: tuple[int, int]) -> list[str]:
    """Loop devices whose backing file is the file ``identity`` names (deleted or not)."""
    return sorted(d for d, (dev, ino, _) in loop_backing_ids().items() if (dev, ino) == identity)


def loop_backing_name(device: str) -> str:
    """The backing file's name as sysfs shows it to this process."""
    return (Path("/sys/block") / Path(device).name / "loop" / "backing_file").read_text().strip()


def attach_in_a_vanished_namespace(data: Path, relative: str, view: Path) -> str:
    """Attach ``data/relative`` the way a driver container did: from its own mount
    namespace, through a private bind mount of ``data`` at ``view``. The namespace (and the
    bind) end with the command; the device stays."""
    view.mkdir(parents=True, exist_ok=True)
    script = 'mount --bind -- "$1" "$2" && exec losetup --find --show -- "$2/$3"'
    argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]
    done = sh(*argv, "sh", str(data), str(view), relative)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def wait_for_backing_name(device: str, wanted: str, timeout: float = 5.0) -> str:
    """The namespace is torn down just after its last process exits; wait for its mounts."""
    deadline = time.monotonic() + timeout
    while (name := loop_backing_name(device)) != wanted and time.monotonic() < deadline:
        time.sleep(0.02)
    return name


def record_growth_behind_the_driver(data_dir: Path, volume_id: str, size: int) -> None:
    """What a growth recorded but never finished on the host leaves: a record whose size
    the image lacks (the driver is stopped; it reads records at start-up)."""
    path = data_dir / "state" / "volumes" / f"{volume_id}.json"
    record = json.loads(path.read_text())
    record["capacity_bytes"] = size
    path.write_text(json.dumps(record))


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def force_cleanup(root: Path) -> None:
    """Lazily unmount everything under ``root`` (deepest first), then detach its loops."""
    for _ in range(10):
        leftover = mounts_under(root)
        if not leftover:
            break
        for point in sorted(leftover, key=len, reverse=True):
            sh("umount", "-l", "--", point)
    for device in loops_under(root):
        sh("losetup", "-d", device)


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


# -- the caller's side ----------------------------------------------------------------
@dataclass
class Kubelet:
    """Plays kubelet and provisioner: picks paths under ``root`` and calls the driver."""

    client: Client
    root: Path
    data_dir: Path

    def staging(self, volume: str) -> Path:
        path = self.root / "plugins" / volume / "globalmount"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def target(self, pod: str, volume: str = "vol") -> Path:
        parent = self.root / "pods" / pod / "volumes"
        parent.mkdir(parents=True, exist_ok=True)
        return parent / volume

    def image(self, volume_id: str) -> Path:
        return self.data_dir / "images" / f"{volume_id}.img"

    def directory(self, volume_id: str) -> Path:
        return self.data_dir / "volumes" / volume_id

    def artefact(self, volume_id: str, flavour: Flavour) -> Path:
        """Where the volume's data lives: its directory or its image file."""
        if flavour.params.get("volumeType") == "directory":
            return self.directory(volume_id)
        return self.image(volume_id)

    def record(self, volume_id: str) -> Path:
        return self.data_dir / "state" / "volumes" / f"{volume_id}.json"

    def create(self, name: str, flavour: Flavour) -> str:
        request = csi_pb2.CreateVolumeRequest(
            name=name,
            parameters=dict(flavour.params),
            capacity_range=csi_pb2.CapacityRange(required_bytes=flavour.size),
            volume_capabilities=[flavour.cap()],
        )
        return str(self.client.controller.CreateVolume(request).volume.volume_id)

    def delete(self, volume_id: str) -> None:
        self.client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))

    def stage(self, volume_id: str, staging: Path, cap: csi_pb2.VolumeCapability) -> None:
        self.client.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume_id, staging_target_path=str(staging), volume_capability=cap
            )
        )

    def unstage(self, volume_id: str, staging: Path) -> None:
        self.client.node.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=str(staging))
        )

    def publish(
        self,
        volume_id: str,
        staging: Path,
        target: Path,
        cap: csi_pb2.VolumeCapability,
        *,
        readonly: bool = False,
    ) -> None:
        self.client.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume_id,
                staging_target_path=str(staging),
                target_path=str(target),
                volume_capability=cap,
                readonly=readonly,
            )
        )

    def unpublish(self, volume_id: str, target: Path) -> None:
        self.client.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target))
        )

    def stats(self, volume_id: str, path: Path) -> csi_pb2.NodeGetVolumeStatsResponse:
        return self.client.node.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=str(path))
        )
