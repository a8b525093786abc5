"""A volume driven through its life cycle by a kubelet stand-in, remembering where it stands.

Used by the crash-point and failing-tool tests: ``do(op)`` makes one CSI call (create,
stage, publish, write, expand, node-expand, snapshot, unpublish, unstage, delete) and
records its effect only when the call succeeds, so a failed call can simply be retried.
``verify`` checks the invariants and the data; ``finish`` uses the volume to the end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from csi.layout import volume_id_for_name
from csi.pb import csi_pb2
from tests.support.driver import DriverProcess
from tests.support.host import device_size, is_frozen, read_at, read_ext4_file, write_at
from tests.support.invariants import (
    assert_consistent,
    assert_nothing_of,
    devices_of,
    image_path,
    record_of,
    snapshot_records,
)
from tests.support.kubelet import DIRECTORY, MIB, Flavour
from tests.support.status import error_of

EXT4 = Flavour("ext4", {"volumeType": "loop", "fsType": "ext4"}, 32 * MIB, fs_type="ext4")
BLOCK = Flavour("block", {"volumeType": "loop"}, 16 * MIB, block=True)
ALL = (EXT4, BLOCK, DIRECTORY)
LOOPS = (EXT4, BLOCK)
GROWTH = 16 * MIB
OFFSET = 3 * MIB  # where block volumes hold the payload


@dataclass
class Life:
    """One volume driven through its life cycle, remembering where it stands."""

    driver: DriverProcess
    flavour: Flavour
    name: str = "crash-test-volume"
    size: int = 0
    staged: bool = False
    published: bool = False
    deleted: bool = False
    payload: bytes = b""
    snapshot_id: str = ""
    fs_bytes_before_growth: int = 0

    def __post_init__(self) -> None:
        self.size = self.flavour.size
        self.volume_id = volume_id_for_name(self.name)
        kubelet = self.driver.kubelet_root
        self.staging = kubelet / "plugins" / self.volume_id / "globalmount"
        self.target = kubelet / "pods" / "pod" / "volumes" / "vol"

    @property
    def data_dir(self) -> Path:
        return self.driver.data_dir

    def do(self, op: str) -> None:
        """Make the CSI call named ``op``; its effect is remembered only if it succeeds."""
        getattr(self, "_" + op.replace("-", "_"))()

    def _create(self) -> None:
        assert self.driver.kubelet.create(self.name, self.flavour) == self.volume_id

    def _stage(self) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        self.driver.kubelet.stage(self.volume_id, self.staging, self.flavour.cap())
        self.staged = True

    def _publish(self) -> None:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        cap = self.flavour.cap()
        self.driver.kubelet.publish(self.volume_id, self.staging, self.target, cap)
        self.published = True

    def _write(self) -> None:
        self.payload = os.urandom(4096) + b"written before the crash"
        self._put(self.target, self.payload)

    def _expand(self) -> None:
        if self.flavour.fs_type:
            # Unpublished, the filesystem cannot be larger than its old device.
            before = _fs_bytes(self.target) if self.published else self.size
            self.fs_bytes_before_growth = before
        request = csi_pb2.ControllerExpandVolumeRequest(
            volume_id=self.volume_id,
            capacity_range=csi_pb2.CapacityRange(required_bytes=self.size + GROWTH),
        )
        reply = self.driver.client.controller.ControllerExpandVolume(request)
        assert reply.capacity_bytes == self.size + GROWTH
        self.size += GROWTH

    def _node_expand(self) -> None:
        request = csi_pb2.NodeExpandVolumeRequest(
            volume_id=self.volume_id,
            volume_path=str(self.target),
            capacity_range=csi_pb2.CapacityRange(required_bytes=self.size),
        )
        self.driver.client.node.NodeExpandVolume(request)

    def _snapshot(self) -> None:
        request = csi_pb2.CreateSnapshotRequest(
            name=f"{self.name}-snap", source_volume_id=self.volume_id
        )
        snapshot = self.driver.client.controller.CreateSnapshot(request).snapshot
        assert snapshot.ready_to_use
        self.snapshot_id = snapshot.snapshot_id

    def _unpublish(self) -> None:
        self.driver.kubelet.unpublish(self.volume_id, self.target)
        self.published = False

    def _unstage(self) -> None:
        self.driver.kubelet.unstage(self.volume_id, self.staging)
        self.staged = False

    def _delete(self) -> None:
        self.driver.kubelet.delete(self.volume_id)
        self.deleted = True

    # -- data ----------------------------------------------------------------------
    def _put(self, where: Path, data: bytes) -> None:
        if self.flavour.block:
            write_at(where, OFFSET, data)
            return
        fd = os.open(where / "payload", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _get(self, where: Path) -> bytes:
        if self.flavour.block:
            return read_at(where, OFFSET, len(self.payload))
        return (where / "payload").read_bytes()

    def read_payload(self) -> bytes:
        """The payload, read wherever the volume is reachable right now."""
        if self.published:
            return self._get(self.target)
        if self.flavour is DIRECTORY:
            return self._get(self.data_dir / "volumes" / self.volume_id)
        image = image_path(self.data_dir, self.volume_id)
        if self.flavour.block:
            return self._get(image)
        if self.staged:
            return self._get(self.staging)
        return read_ext4_file(image, "payload")

    def snapshot_payload(self) -> bytes:
        stem = self.data_dir / "snapshots" / self.snapshot_id
        if self.flavour is DIRECTORY:
            return self._get(stem.with_suffix(".dir"))
        if self.flavour.block:
            return self._get(stem.with_suffix(".img"))
        return read_ext4_file(stem.with_suffix(".img"), "payload")

    # -- checks --------------------------------------------------------------------
    def verify(self, op: str) -> None:
        """After the retried ``op``: invariants, the op's own outcome, the data."""
        records = assert_consistent(self.data_dir, self.driver.kubelet_root)
        controller = self.driver.client.controller
        listed = [e.volume.volume_id for e in controller.ListVolumes(_LIST).entries]
        if self.deleted:
            assert_nothing_of(self.data_dir, self.driver.kubelet_root, self.volume_id)
            assert listed == []
            assert records == []
            return
        assert listed == [self.volume_id], f"ListVolumes shows {listed}"
        record = record_of(self.data_dir, self.volume_id)
        assert record is not None
        assert record.capacity_bytes == self.size
        assert bool(record.staging_path) == self.staged
        assert set(record.targets) == ({str(self.target)} if self.published else set())
        if op == "expand":
            self.verify_growth()
        if op == "snapshot":
            (snapshot,) = snapshot_records(self.data_dir)
            assert snapshot.snapshot_id == self.snapshot_id
            assert self.snapshot_payload() == self.payload, "snapshot lacks the data"
            if self.flavour.fs_type:
                assert not is_frozen(self.staging), "source filesystem left frozen"
            self._put(self.target, b"still writable after the snapshot")
            self._put(self.target, self.payload)
        if self.payload:
            assert self.read_payload() == self.payload, "data written before the crash lost"

    def verify_growth(self) -> None:
        if self.flavour is DIRECTORY:
            return
        image = image_path(self.data_dir, self.volume_id)
        assert image.stat().st_size == self.size
        if self.staged:
            (device,) = devices_of(image)
            assert device_size(Path(device)) == self.size, "loop device kept its old size"
        if self.flavour.fs_type and self.published:
            error = error_of(lambda: self.do("node-expand"))
            if error is not None:
                # Without CAP_SYS_RESOURCE ext4 grows offline, when it is next staged.
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
                assert "CAP_SYS_RESOURCE" in (error.details() or "")
                for op in ("unpublish", "unstage", "stage", "publish"):
                    self.do(op)
            assert _fs_bytes(self.target) > self.fs_bytes_before_growth, "fs did not grow"

    def finish(self) -> None:
        """Use the volume to the end of its life: publish, write, read, tear down, delete."""
        if self.deleted:
            return
        for op, done in (("stage", self.staged), ("publish", self.published)):
            if not done:
                self.do(op)
        if not self.payload:
            self.do("write")
        assert self.read_payload() == self.payload
        if self.snapshot_id:
            request = csi_pb2.DeleteSnapshotRequest(snapshot_id=self.snapshot_id)
            self.driver.client.controller.DeleteSnapshot(request)
        for op in ("unpublish", "unstage", "delete"):
            self.do(op)
        assert_consistent(self.data_dir, self.driver.kubelet_root)
        assert_nothing_of(self.data_dir, self.driver.kubelet_root, self.volume_id)


_LIST = csi_pb2.ListVolumesRequest()


def _fs_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize
