"""Damaged state: a record the driver cannot read never costs data, nor other volumes' service.

A volume's record is damaged between two runs. The driver must start, say which file it
could not read (event=damaged_record ... path=...), keep the record and the volume's data
byte-for-byte, refuse that volume's calls with FAILED_PRECONDITION and serve the others.
Data with no record at all is reported (event=unaccounted_data) and left alone.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from csi.pb import csi_pb2
from tests.reliability.damage_support import (
    DAMAGED_NAME,
    EXT4,
    HEALTHY_NAME,
    calls_for,
    serve_normally,
)
from tests.support.driver import DriverProcess
from tests.support.host import loops_under
from tests.support.invariants import assert_consistent, image_path
from tests.support.kubelet import DIRECTORY, MIB, Flavour
from tests.support.status import error_of, rpc_error

Damage = Callable[[bytes, dict[str, object]], bytes]


def _json(data: dict[str, object]) -> bytes:
    return json.dumps(data).encode()


DAMAGES: dict[str, Damage] = {
    "empty": lambda raw, data: b"",
    "truncated": lambda raw, data: raw[: len(raw) // 2],
    "garbage": lambda raw, data: b"\x00\xff\xfe not json \x89PNG\r\n\x1a" * 16,
    "json-array": lambda raw, data: b"[1, 2, 3]",
    "json-null": lambda raw, data: b"null",
    "json-string": lambda raw, data: b'"a volume"',
    "json-number": lambda raw, data: b"42",
    "schema-zero": lambda raw, data: _json({**data, "schema": 0}),
    "no-schema": lambda raw, data: _json({k: v for k, v in data.items() if k != "schema"}),
    "missing-field": lambda raw, data: _json({k: v for k, v in data.items() if k != "spec"}),
    "bad-enum": lambda raw, data: _json({**data, "phase": "exploded"}),
    "bad-type": lambda raw, data: _json({**data, "capacity_bytes": "lots"}),
    "other-id": lambda raw, data: _json({**data, "volume_id": "vol-" + "0" * 32}),
}
DECODER_BREAKERS: dict[str, tuple[Damage, str]] = {
    "deeply-nested": (lambda raw, data: b"[" * 100_000 + b"]" * 100_000, "RecursionError"),
    "infinite-size": (
        lambda raw, data: raw.replace(
            f'"capacity_bytes":{data["capacity_bytes"]}'.encode(), b'"capacity_bytes":1e999'
        ),
        "OverflowError (int(inf))",
    ),
}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_path(data_dir: Path, volume_id: str, kind: str = "volumes") -> Path:
    return data_dir / "state" / kind / f"{volume_id}.json"


def log_lines(driver: DriverProcess, event: str) -> list[str]:
    return [line for line in driver.log().splitlines() if f"event={event}" in line]


@dataclass(frozen=True)
class TwoVolumes:
    """A data root a driver left after making two ext4 volumes, and their IDs."""

    data_dir: Path
    damaged: str
    healthy: str

    def copy_to(self, data_dir: Path) -> tuple[str, str]:
        """The same data root at ``data_dir`` (sparse images kept sparse)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["cp", "-a", "--sparse=always", f"{self.data_dir}/.", str(data_dir)], check=True
        )
        return self.damaged, self.healthy


@pytest.fixture(scope="module")
def two_volumes(tmp_path_factory: pytest.TempPathFactory) -> TwoVolumes:
    """Made once per module by a driver of its own; each test damages a copy of it."""
    base = tmp_path_factory.mktemp("two-volumes")
    driver = DriverProcess(base / "data", base / "logs", base / "kubelet")
    try:
        driver.start()
        kubelet = driver.kubelet
        damaged, healthy = kubelet.create(DAMAGED_NAME, EXT4), kubelet.create(HEALTHY_NAME, EXT4)
        assert driver.stop() == 0
    finally:
        driver.kill()
    return TwoVolumes(base / "data", damaged, healthy)


def check_damage(
    driver: DriverProcess,
    two_volumes: TwoVolumes,
    damage: Damage,
    event: str = "damaged_record",
    word: str = "damaged",
) -> None:
    damaged, healthy = two_volumes.copy_to(driver.data_dir)
    record, image = record_path(driver.data_dir, damaged), image_path(driver.data_dir, damaged)
    original = record.read_bytes()
    record.write_bytes(damage(original, json.loads(original)))
    before = {record: sha(record), image: sha(image)}

    driver.start()
    lines = log_lines(driver, event)
    assert any(f"path={record}" in line for line in lines), f"no clear log line: {lines}"
    for rpc, call in calls_for(driver.client, damaged, driver.kubelet_root).items():
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (rpc, error.code())
        assert word in (error.details() or ""), (rpc, error.details())
    listed = driver.client.controller.ListVolumes(csi_pb2.ListVolumesRequest())
    assert [e.volume.volume_id for e in listed.entries] == [healthy]
    serve_normally(driver, healthy)
    assert driver.stop() == 0
    assert {p: sha(p) for p in before} == before, "damaged record or its data was changed"
    assert loops_under(driver.data_dir) == []

    record.write_bytes(original)  # an operator repairs the record: the volume is back
    driver.start()
    driver.kubelet.delete(damaged)
    driver.kubelet.delete(healthy)
    assert_consistent(driver.data_dir, driver.kubelet_root)
    assert driver.stop() == 0


def test_record_of_a_newer_driver_is_left_alone(
    driver_process: DriverProcess, two_volumes: TwoVolumes
) -> None:
    """Not damage: refused with the reason, never rewritten, the volume's data untouched;
    once that driver (here: the record as it was) is back, the volume serves again."""
    newer = lambda raw, data: _json({**data, "schema": 99})  # noqa: E731
    check_damage(driver_process, two_volumes, newer, event="record_too_new", word="newer driver")


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=list(DAMAGES))
def test_damaged_volume_record_is_quarantined(
    driver_process: DriverProcess, two_volumes: TwoVolumes, damage: Damage
) -> None:
    check_damage(driver_process, two_volumes, damage)


@pytest.mark.parametrize(
    "damage",
    [d for d, _e in DECODER_BREAKERS.values()],
    ids=list(DECODER_BREAKERS),
)
def test_damaged_record_that_breaks_the_decoder(
    driver_process: DriverProcess, two_volumes: TwoVolumes, damage: Damage
) -> None:
    check_damage(driver_process, two_volumes, damage)


SNAP_DAMAGED, SNAP_HEALTHY = "snapshot-damaged", "snapshot-healthy"


def make_damaged_snapshot(driver: DriverProcess) -> tuple[str, str, str, dict[Path, str]]:
    """A volume with two snapshots; the first snapshot's record is then damaged."""
    driver.start()
    volume_id = driver.kubelet.create("snapshot-source", EXT4)
    ids = []
    for name in (SNAP_DAMAGED, SNAP_HEALTHY):
        request = csi_pb2.CreateSnapshotRequest(name=name, source_volume_id=volume_id)
        ids.append(driver.client.controller.CreateSnapshot(request).snapshot.snapshot_id)
    assert driver.stop() == 0
    record = record_path(driver.data_dir, ids[0], "snapshots")
    record.write_bytes(b"{ damaged")
    content = driver.data_dir / "snapshots" / f"{ids[0]}.img"
    driver.start()
    assert any(f"path={record}" in line for line in log_lines(driver, "damaged_record"))
    return volume_id, ids[0], ids[1], {record: sha(record), content: sha(content)}


def test_damaged_snapshot_record_is_quarantined(driver_process: DriverProcess) -> None:
    volume_id, damaged, healthy, before = make_damaged_snapshot(driver_process)
    controller = driver_process.client.controller
    error = rpc_error(
        lambda: controller.GetSnapshot(csi_pb2.GetSnapshotRequest(snapshot_id=damaged))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    listed = controller.ListSnapshots(csi_pb2.ListSnapshotsRequest())
    assert [e.snapshot.snapshot_id for e in listed.entries] == [healthy]
    controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=healthy))
    driver_process.kubelet.delete(volume_id)
    assert driver_process.stop() == 0
    driver_process.start()  # a second start must not "repair" it either
    assert driver_process.stop() == 0
    assert {p: sha(p) for p in before} == before


def test_delete_snapshot_refuses_a_damaged_record(driver_process: DriverProcess) -> None:
    _, damaged, _, before = make_damaged_snapshot(driver_process)
    request = csi_pb2.DeleteSnapshotRequest(snapshot_id=damaged)
    error = rpc_error(lambda: driver_process.client.controller.DeleteSnapshot(request))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert {p: sha(p) for p in before} == before


def test_create_snapshot_keeps_a_damaged_record(driver_process: DriverProcess) -> None:
    volume_id, _, _, before = make_damaged_snapshot(driver_process)
    request = csi_pb2.CreateSnapshotRequest(name=SNAP_DAMAGED, source_volume_id=volume_id)
    error = rpc_error(lambda: driver_process.client.controller.CreateSnapshot(request))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert {p: sha(p) for p in before} == before


def orphan_volumes(driver: DriverProcess) -> tuple[Path, Path]:
    """A loop and a directory volume whose records are then lost (not damaged: gone)."""
    driver.start()
    loop_id = driver.kubelet.create("orphan-loop", EXT4)
    dir_id = driver.kubelet.create("orphan-dir", DIRECTORY)
    directory = driver.data_dir / "volumes" / dir_id
    (directory / "keep").write_text("user data")
    assert driver.stop() == 0
    for volume_id in (loop_id, dir_id):
        record_path(driver.data_dir, volume_id).unlink()
    return image_path(driver.data_dir, loop_id), directory


def test_data_without_a_record_is_left_in_place(driver_process: DriverProcess) -> None:
    image, directory = orphan_volumes(driver_process)
    stray = driver_process.data_dir / "images" / "not-a-volume.img"
    stray.write_bytes(b"something an operator put here")
    before = {image: sha(image), stray: sha(stray)}
    for _ in range(2):  # every start reports it, none removes it
        driver_process.start()
        lines = log_lines(driver_process, "unaccounted_data")
        for path in (image, directory, stray):
            assert any(f"path={path}" in line for line in lines), (path, lines)
        listed = driver_process.client.controller.ListVolumes(csi_pb2.ListVolumesRequest())
        assert list(listed.entries) == []
        assert driver_process.stop() == 0
        assert {p: sha(p) for p in before} == before
        assert (directory / "keep").read_text() == "user data"
    assert loops_under(driver_process.data_dir) == []


def test_create_does_not_adopt_unaccounted_data(driver_process: DriverProcess) -> None:
    image, _ = orphan_volumes(driver_process)
    before = sha(image)
    driver_process.start()
    bigger = Flavour("ext4-32", EXT4.params, 32 * MIB, fs_type="ext4")
    request = csi_pb2.CreateVolumeRequest(
        name="orphan-loop",
        parameters=dict(bigger.params),
        capacity_range=csi_pb2.CapacityRange(required_bytes=bigger.size),
        volume_capabilities=[bigger.cap()],
    )
    replies: list[csi_pb2.CreateVolumeResponse] = []
    error = error_of(lambda: replies.append(driver_process.client.controller.CreateVolume(request)))
    if error is None:
        assert replies[0].volume.capacity_bytes >= bigger.size, "volume smaller than required"
        pytest.fail("CreateVolume adopted an image that no record accounted for")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    assert sha(image) == before
