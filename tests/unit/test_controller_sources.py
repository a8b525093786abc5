"""CreateVolume from another volume or a snapshot, for directory volumes (no root needed)."""

from __future__ import annotations

import grpc
import pytest

from csi.config import MIB
from csi.layout import snapshot_id_for_name, volume_id_for_name
from csi.pb import csi_pb2
from tests.support.driver import RunningDriver
from tests.support.status import rpc_error
from tests.unit.support import create_request, on_disk


def from_volume(name: str, source_id: str, **kwargs: object) -> csi_pb2.CreateVolumeRequest:
    request = create_request(name, **kwargs)  # type: ignore[arg-type]
    request.volume_content_source.volume.volume_id = source_id
    return request


def from_snapshot(name: str, snapshot_id: str, **kwargs: object) -> csi_pb2.CreateVolumeRequest:
    request = create_request(name, **kwargs)  # type: ignore[arg-type]
    request.volume_content_source.snapshot.snapshot_id = snapshot_id
    return request


@pytest.fixture
def source(driver: RunningDriver) -> str:
    volume_id = driver.client.controller.CreateVolume(create_request("src")).volume.volume_id
    root = driver.data_dir / "volumes" / volume_id
    (root / "sub").mkdir()
    (root / "sub" / "file.txt").write_text("original")
    return volume_id


def test_clone_copies_content(driver: RunningDriver, source: str) -> None:
    response = driver.client.controller.CreateVolume(from_volume("clone", source))
    clone = response.volume
    assert clone.volume_id == volume_id_for_name("clone")
    assert clone.content_source.volume.volume_id == source
    clone_root = driver.data_dir / "volumes" / clone.volume_id
    assert (clone_root / "sub" / "file.txt").read_text() == "original"
    # the clone is independent of its source
    (clone_root / "sub" / "file.txt").write_text("changed")
    assert (driver.data_dir / "volumes" / source / "sub" / "file.txt").read_text() == "original"
    again = driver.client.controller.CreateVolume(from_volume("clone", source)).volume
    assert again.volume_id == clone.volume_id


def test_same_name_other_source_already_exists(driver: RunningDriver, source: str) -> None:
    driver.client.controller.CreateVolume(from_volume("clone", source))
    plain = rpc_error(lambda: driver.client.controller.CreateVolume(create_request("clone")))
    assert plain.code() == grpc.StatusCode.ALREADY_EXISTS


def test_clone_of_missing_volume(driver: RunningDriver, source: str) -> None:
    before = on_disk(driver.data_dir)
    missing = from_volume("clone", volume_id_for_name("nope"))
    error = rpc_error(lambda: driver.client.controller.CreateVolume(missing))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert on_disk(driver.data_dir) == before


def test_clone_of_other_kind_refused(driver: RunningDriver, source: str) -> None:
    before = on_disk(driver.data_dir)
    loop = from_volume("clone", source, parameters={"volumeType": "loop"})
    error = rpc_error(lambda: driver.client.controller.CreateVolume(loop))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert on_disk(driver.data_dir) == before


def test_clone_limit_below_source_size(driver: RunningDriver) -> None:
    big = driver.client.controller.CreateVolume(create_request("big", required=4 * MIB)).volume
    small = from_volume("clone", big.volume_id, required=MIB, limit=2 * MIB)
    error = rpc_error(lambda: driver.client.controller.CreateVolume(small))
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE
    grown = driver.client.controller.CreateVolume(from_volume("clone", big.volume_id)).volume
    assert grown.capacity_bytes == 4 * MIB  # never smaller than its source


def test_snapshot_and_restore(driver: RunningDriver, source: str) -> None:
    request = csi_pb2.CreateSnapshotRequest(source_volume_id=source, name="snap-1")
    snapshot = driver.client.controller.CreateSnapshot(request).snapshot
    assert snapshot.snapshot_id == snapshot_id_for_name("snap-1")
    assert snapshot.source_volume_id == source
    assert snapshot.ready_to_use
    (driver.data_dir / "volumes" / source / "sub" / "file.txt").write_text("after")

    restored = driver.client.controller.CreateVolume(
        from_snapshot("restored", snapshot.snapshot_id)
    ).volume
    assert restored.content_source.snapshot.snapshot_id == snapshot.snapshot_id
    root = driver.data_dir / "volumes" / restored.volume_id
    assert (root / "sub" / "file.txt").read_text() == "original"


def test_restore_of_missing_snapshot(driver: RunningDriver) -> None:
    request = from_snapshot("restored", snapshot_id_for_name("nope"))
    error = rpc_error(lambda: driver.client.controller.CreateVolume(request))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert on_disk(driver.data_dir) == ([], [])
