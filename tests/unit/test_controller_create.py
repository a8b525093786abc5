"""CreateVolume and DeleteVolume through the real in-process server (directory volumes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from csi.config import MIB
from csi.layout import volume_id_for_name
from csi.pb import csi_pb2
from tests.support.driver import RunningDriver, running_driver
from tests.support.kubelet import block_capability, mount_capability
from tests.support.status import rpc_error
from tests.unit.support import DIRECTORY, NODE, TOPOLOGY_KEY, Mode, create, create_request, on_disk


def test_create_is_idempotent(driver: RunningDriver) -> None:
    first = create(driver.client, "pvc-1", required=2 * MIB)
    second = create(driver.client, "pvc-1", required=2 * MIB)
    assert first.volume_id == second.volume_id == volume_id_for_name("pvc-1")
    assert first.capacity_bytes == second.capacity_bytes == 2 * MIB
    assert dict(first.volume_context) == DIRECTORY
    volumes, records = on_disk(driver.data_dir)
    assert volumes == [first.volume_id]
    assert records == [f"{first.volume_id}.json"]
    assert (driver.data_dir / "volumes" / first.volume_id).is_dir()


def test_create_reports_topology(driver: RunningDriver) -> None:
    volume = create(driver.client, "pvc-topo")
    assert [dict(t.segments) for t in volume.accessible_topology] == [{TOPOLOGY_KEY: NODE}]


def test_create_accepts_local_topology_and_pvc_metadata(driver: RunningDriver) -> None:
    request = create_request(
        "pvc-meta", parameters={**DIRECTORY, "csi.storage.k8s.io/pvc/name": "data"}
    )
    request.accessibility_requirements.requisite.add(segments={TOPOLOGY_KEY: "other"})
    request.accessibility_requirements.requisite.add(segments={TOPOLOGY_KEY: NODE})
    response = driver.client.controller.CreateVolume(request)
    assert response.volume.volume_id == volume_id_for_name("pvc-meta")
    assert dict(response.volume.volume_context) == DIRECTORY


@pytest.mark.parametrize(
    "second",
    [
        {"required": 4 * MIB},
        {"required": MIB, "limit": MIB},
        {"parameters": {"volumeType": "loop"}},
        {"parameters": {}},
    ],
    ids=["bigger", "smaller-limit", "loop", "default-params"],
)
def test_same_name_incompatible(driver: RunningDriver, second: dict[str, object]) -> None:
    volume = create(driver.client, "pvc-1", required=2 * MIB)
    before = on_disk(driver.data_dir)
    error = rpc_error(lambda: create(driver.client, "pvc-1", **second))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert on_disk(driver.data_dir) == before
    assert (driver.data_dir / "volumes" / volume.volume_id).is_dir()


def _missing_caps() -> csi_pb2.CreateVolumeRequest:
    return create_request("pvc-x", caps=[])


def _source_bad_id() -> csi_pb2.CreateVolumeRequest:
    request = create_request("pvc-x")
    request.volume_content_source.volume.volume_id = "../existing"
    return request


def _source_empty() -> csi_pb2.CreateVolumeRequest:
    request = create_request("pvc-x")
    request.volume_content_source.SetInParent()  # present, but names neither kind
    return request


INVALID: dict[str, Callable[[], csi_pb2.CreateVolumeRequest]] = {
    "missing-name": lambda: create_request(""),
    "bad-name": lambda: create_request("a/b"),
    "missing-caps": _missing_caps,
    "unknown-param": lambda: create_request("pvc-x", parameters={**DIRECTORY, "sise": "1"}),
    "multi-node-multi-writer": lambda: create_request(
        "pvc-x", caps=[mount_capability(mode=Mode.MULTI_NODE_MULTI_WRITER)]
    ),
    "multi-node-reader": lambda: create_request(
        "pvc-x", caps=[mount_capability(mode=Mode.MULTI_NODE_READER_ONLY)]
    ),
    "block-on-directory": lambda: create_request("pvc-x", caps=[block_capability()]),
    "mixed-access": lambda: create_request(
        "pvc-x", caps=[mount_capability(), block_capability()], parameters={}
    ),
    "limit-below-required": lambda: create_request("pvc-x", required=2 * MIB, limit=MIB),
    "negative": lambda: create_request("pvc-x", required=-1),
    "source-bad-id": _source_bad_id,
    "source-empty": _source_empty,
}


@pytest.mark.parametrize("build", INVALID.values(), ids=INVALID.keys())
def test_invalid_create_changes_nothing(
    driver: RunningDriver, build: Callable[[], csi_pb2.CreateVolumeRequest]
) -> None:
    create(driver.client, "existing")
    before = on_disk(driver.data_dir)
    error = rpc_error(lambda: driver.client.controller.CreateVolume(build()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details()
    assert "Traceback" not in error.details()
    assert on_disk(driver.data_dir) == before


def test_requisite_topology_elsewhere(driver: RunningDriver) -> None:
    request = create_request("pvc-far")
    request.accessibility_requirements.requisite.add(segments={TOPOLOGY_KEY: "other-node"})
    error = rpc_error(lambda: driver.client.controller.CreateVolume(request))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert on_disk(driver.data_dir) == ([], [])


def test_max_volumes_per_node(tmp_path: Path) -> None:
    with running_driver(tmp_path / "data", max_volumes_per_node=2) as running:
        create(running.client, "pvc-1")
        create(running.client, "pvc-2")
        before = on_disk(running.data_dir)
        error = rpc_error(lambda: create(running.client, "pvc-3"))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert on_disk(running.data_dir) == before
        # a retry of an existing volume is still answered
        assert create(running.client, "pvc-2").volume_id == volume_id_for_name("pvc-2")


def test_capacity_limit(tmp_path: Path) -> None:
    with running_driver(tmp_path / "data", capacity_limit=3 * MIB) as running:
        create(running.client, "pvc-1", required=2 * MIB)
        error = rpc_error(lambda: create(running.client, "pvc-2", required=2 * MIB))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert create(running.client, "pvc-3", required=MIB).capacity_bytes == MIB
        assert len(on_disk(running.data_dir)[0]) == 2


def test_beyond_max_volume_size(tmp_path: Path) -> None:
    with running_driver(tmp_path / "data", max_volume_size=8 * MIB) as running:
        error = rpc_error(lambda: create(running.client, "pvc-big", required=9 * MIB))
        assert error.code() == grpc.StatusCode.OUT_OF_RANGE
        assert on_disk(running.data_dir) == ([], [])


def delete(driver: RunningDriver, volume_id: str) -> None:
    driver.client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))


def test_delete_removes_directory_and_record(driver: RunningDriver) -> None:
    keep = create(driver.client, "keep")
    doomed = create(driver.client, "doomed")
    (driver.data_dir / "volumes" / doomed.volume_id / "file.txt").write_text("data")
    delete(driver, doomed.volume_id)
    assert on_disk(driver.data_dir) == ([keep.volume_id], [f"{keep.volume_id}.json"])
    delete(driver, doomed.volume_id)  # idempotent
    delete(driver, volume_id_for_name("never-existed"))
    assert on_disk(driver.data_dir) == ([keep.volume_id], [f"{keep.volume_id}.json"])


def test_create_after_delete_starts_empty(driver: RunningDriver) -> None:
    volume = create(driver.client, "again")
    (driver.data_dir / "volumes" / volume.volume_id / "old").write_text("x")
    delete(driver, volume.volume_id)
    assert create(driver.client, "again").volume_id == volume.volume_id
    assert list((driver.data_dir / "volumes" / volume.volume_id).iterdir()) == []


@pytest.mark.parametrize("volume_id", ["../etc", "", "/etc", "Vol-1", "a" * 129])
def test_delete_invalid_id(driver: RunningDriver, volume_id: str) -> None:
    error = rpc_error(lambda: delete(driver, volume_id))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
