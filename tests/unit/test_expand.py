"""ControllerExpandVolume for directory volumes (no root needed)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from csi.config import MIB
from csi.layout import volume_id_for_name
from csi.pb import csi_pb2
from tests.support.driver import RunningDriver, running_driver
from tests.support.kubelet import block_capability
from tests.support.status import rpc_error
from tests.unit.support import create


def expand(
    driver: RunningDriver, volume_id: str, required: int, limit: int = 0
) -> csi_pb2.ControllerExpandVolumeResponse:
    request = csi_pb2.ControllerExpandVolumeRequest(
        volume_id=volume_id,
        capacity_range=csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit),
    )
    return driver.client.controller.ControllerExpandVolume(request)


def test_expand_directory(driver: RunningDriver) -> None:
    volume = create(driver.client, "grow")
    response = expand(driver, volume.volume_id, 3 * MIB)
    assert response.capacity_bytes == 3 * MIB
    assert not response.node_expansion_required
    record = driver.data_dir / "state" / "volumes" / f"{volume.volume_id}.json"
    assert json.loads(record.read_text())["capacity_bytes"] == 3 * MIB
    get = csi_pb2.ControllerGetVolumeRequest(volume_id=volume.volume_id)
    assert driver.client.controller.ControllerGetVolume(get).volume.capacity_bytes == 3 * MIB
    # a retry, or a smaller request, never shrinks the volume
    assert expand(driver, volume.volume_id, 3 * MIB).capacity_bytes == 3 * MIB
    assert expand(driver, volume.volume_id, 2 * MIB).capacity_bytes == 3 * MIB


def test_expand_errors(driver: RunningDriver) -> None:
    volume = create(driver.client, "grow")
    unknown = rpc_error(lambda: expand(driver, volume_id_for_name("nope"), 2 * MIB))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    bad = rpc_error(lambda: expand(driver, "../x", 2 * MIB))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    empty = rpc_error(lambda: expand(driver, volume.volume_id, 0))
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT
    inverted = rpc_error(lambda: expand(driver, volume.volume_id, 4 * MIB, 2 * MIB))
    assert inverted.code() == grpc.StatusCode.INVALID_ARGUMENT
    no_range = csi_pb2.ControllerExpandVolumeRequest(volume_id=volume.volume_id)
    missing = rpc_error(lambda: driver.client.controller.ControllerExpandVolume(no_range))
    assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
    as_block = csi_pb2.ControllerExpandVolumeRequest(
        volume_id=volume.volume_id,
        capacity_range=csi_pb2.CapacityRange(required_bytes=2 * MIB),
        volume_capability=block_capability(),
    )
    wrong = rpc_error(lambda: driver.client.controller.ControllerExpandVolume(as_block))
    assert wrong.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_expand_beyond_capacity_limit(tmp_path: Path) -> None:
    with running_driver(tmp_path / "data", capacity_limit=4 * MIB) as running:
        volume = create(running.client, "grow", required=2 * MIB)
        error = rpc_error(lambda: expand(running, volume.volume_id, 5 * MIB))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert expand(running, volume.volume_id, 4 * MIB).capacity_bytes == 4 * MIB
