"""ListVolumes, ControllerGetVolume, ValidateVolumeCapabilities, GetCapacity and restarts."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from csi.config import MIB
from csi.layout import volume_id_for_name
from csi.pb import csi_pb2
from tests.support.driver import RunningDriver, running_driver
from tests.support.kubelet import block_capability, mount_capability
from tests.support.status import rpc_error
from tests.unit.support import DIRECTORY, NODE, TOPOLOGY_KEY, Mode, create, list_all

RPC = csi_pb2.ControllerServiceCapability.RPC


def test_controller_capabilities(driver: RunningDriver) -> None:
    response = driver.client.controller.ControllerGetCapabilities(
        csi_pb2.ControllerGetCapabilitiesRequest()
    )
    assert {c.rpc.type for c in response.capabilities} == {
        RPC.CREATE_DELETE_VOLUME,
        RPC.LIST_VOLUMES,
        RPC.GET_CAPACITY,
        RPC.GET_VOLUME,
        RPC.SINGLE_NODE_MULTI_WRITER,
        RPC.CREATE_DELETE_SNAPSHOT,
        RPC.LIST_SNAPSHOTS,
        RPC.GET_SNAPSHOT,
        RPC.CLONE_VOLUME,
        RPC.EXPAND_VOLUME,
        RPC.LIST_VOLUMES_PUBLISHED_NODES,
        RPC.GET_VOLUME_HEALTH,
        RPC.LIST_VOLUME_HEALTH,
        11,  # CSI 1.12's VOLUME_CONDITION, for Kubernetes 1.34-1.36
    }
    assert len(response.capabilities) == 14


# -- ListVolumes -------------------------------------------------------------------------
def list_page(driver: RunningDriver, max_entries: int, token: str) -> csi_pb2.ListVolumesResponse:
    request = csi_pb2.ListVolumesRequest(max_entries=max_entries, starting_token=token)
    return driver.client.controller.ListVolumes(request)


@pytest.fixture
def seven(driver: RunningDriver) -> list[str]:
    return [create(driver.client, f"pvc-{i}").volume_id for i in range(7)]


def test_list_all_at_once(driver: RunningDriver, seven: list[str]) -> None:
    response = list_page(driver, 0, "")
    assert sorted(e.volume.volume_id for e in response.entries) == sorted(seven)
    assert response.next_token == ""
    entry = response.entries[0].volume
    assert entry.capacity_bytes == MIB
    assert [dict(t.segments) for t in entry.accessible_topology] == [{TOPOLOGY_KEY: NODE}]


@pytest.mark.parametrize("max_entries", [1, 3, 6, 7, 8])
def test_list_pagination(driver: RunningDriver, seven: list[str], max_entries: int) -> None:
    pages: list[list[str]] = []
    token = ""
    while True:
        response = list_page(driver, max_entries, token)
        pages.append([e.volume.volume_id for e in response.entries])
        assert len(pages[-1]) <= max_entries
        token = response.next_token
        if not token:
            break
        assert len(pages) < 10
    ids = [i for page in pages for i in page]
    assert sorted(ids) == sorted(seven)
    assert len(ids) == len(set(ids))
    assert len(pages) == -(-7 // max_entries)


def test_list_survives_delete_between_pages(driver: RunningDriver, seven: list[str]) -> None:
    first = list_page(driver, 3, "")
    seen = [e.volume.volume_id for e in first.entries]
    assert len(seen) == 3
    assert first.next_token
    # delete the volume the token refers to, and one not listed yet
    unseen = sorted(set(seven) - set(seen))
    doomed = [seen[-1], unseen[0]]
    for volume_id in doomed:
        driver.client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))
    token = first.next_token
    while token:
        response = list_page(driver, 3, token)
        seen += [e.volume.volume_id for e in response.entries]
        token = response.next_token
    assert len(seen) == len(set(seen))
    assert set(seen) == set(seven) - {unseen[0]}


def test_list_picks_up_volume_created_between_pages(
    driver: RunningDriver, seven: list[str]
) -> None:
    first = list_page(driver, 3, "")
    late = create(driver.client, "pvc-late").volume_id
    ids = [e.volume.volume_id for e in first.entries] + list_all_from(driver, first.next_token)
    assert len(ids) == len(set(ids))
    assert set(seven) <= set(ids) <= {*seven, late}


def list_all_from(driver: RunningDriver, token: str) -> list[str]:
    ids: list[str] = []
    while token:
        response = list_page(driver, 3, token)
        ids += [e.volume.volume_id for e in response.entries]
        token = response.next_token
    return ids


@pytest.mark.parametrize("token", ["invalid-token", "vol-xyz", "../etc", "VOL-" + "0" * 32])
def test_list_bad_token(driver: RunningDriver, seven: list[str], token: str) -> None:
    assert rpc_error(lambda: list_page(driver, 3, token)).code() == grpc.StatusCode.ABORTED


def test_list_negative_max_entries(driver: RunningDriver) -> None:
    assert rpc_error(lambda: list_page(driver, -1, "")).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_list_empty(driver: RunningDriver) -> None:
    response = list_page(driver, 3, "")
    assert list(response.entries) == []
    assert response.next_token == ""


# -- ControllerGetVolume -----------------------------------------------------------------
def test_get_volume(driver: RunningDriver) -> None:
    volume = create(driver.client, "pvc-get", required=3 * MIB)
    request = csi_pb2.ControllerGetVolumeRequest(volume_id=volume.volume_id)
    response = driver.client.controller.ControllerGetVolume(request)
    assert response.volume.volume_id == volume.volume_id
    assert response.volume.capacity_bytes == 3 * MIB
    assert list(response.status.published_node_ids) == []
    missing = csi_pb2.ControllerGetVolumeRequest(volume_id=volume_id_for_name("nope"))
    error = rpc_error(lambda: driver.client.controller.ControllerGetVolume(missing))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    bad = csi_pb2.ControllerGetVolumeRequest(volume_id="../x")
    error = rpc_error(lambda: driver.client.controller.ControllerGetVolume(bad))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- ValidateVolumeCapabilities ----------------------------------------------------------
def validate(
    driver: RunningDriver,
    volume_id: str,
    caps: list[csi_pb2.VolumeCapability],
    parameters: dict[str, str] | None = None,
) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
    request = csi_pb2.ValidateVolumeCapabilitiesRequest(
        volume_id=volume_id, volume_capabilities=caps, parameters=parameters or {}
    )
    return driver.client.controller.ValidateVolumeCapabilities(request)


@pytest.mark.parametrize(
    "mode",
    [
        Mode.SINGLE_NODE_WRITER,
        Mode.SINGLE_NODE_READER_ONLY,
        Mode.SINGLE_NODE_SINGLE_WRITER,
        Mode.SINGLE_NODE_MULTI_WRITER,
    ],
)
def test_validate_confirms_supported(driver: RunningDriver, mode: int) -> None:
    volume = create(driver.client, "pvc-v")
    caps = [mount_capability(mode=mode)]
    response = validate(driver, volume.volume_id, caps, DIRECTORY)
    assert response.HasField("confirmed")
    assert list(response.confirmed.volume_capabilities) == caps
    assert dict(response.confirmed.parameters) == DIRECTORY


@pytest.mark.parametrize(
    "cap",
    [
        mount_capability(mode=Mode.MULTI_NODE_MULTI_WRITER),
        mount_capability(mode=Mode.MULTI_NODE_READER_ONLY),
        mount_capability(mode=Mode.MULTI_NODE_SINGLE_WRITER),
        block_capability(),
    ],
    ids=["mn-multi-writer", "mn-reader", "mn-single-writer", "block-on-mount"],
)
def test_validate_refuses(driver: RunningDriver, cap: csi_pb2.VolumeCapability) -> None:
    volume = create(driver.client, "pvc-v")
    response = validate(driver, volume.volume_id, [mount_capability(), cap])
    assert not response.HasField("confirmed")
    assert response.message


def test_validate_refuses_other_parameters(driver: RunningDriver) -> None:
    volume = create(driver.client, "pvc-v")
    response = validate(driver, volume.volume_id, [mount_capability()], {"volumeType": "loop"})
    assert not response.HasField("confirmed")
    assert response.message


def test_validate_errors(driver: RunningDriver) -> None:
    unknown = validate_error(driver, volume_id_for_name("nope"), [mount_capability()])
    assert unknown == grpc.StatusCode.NOT_FOUND
    assert validate_error(driver, "../x", [mount_capability()]) == grpc.StatusCode.INVALID_ARGUMENT
    volume = create(driver.client, "pvc-v")
    assert validate_error(driver, volume.volume_id, []) == grpc.StatusCode.INVALID_ARGUMENT


def validate_error(
    driver: RunningDriver, volume_id: str, caps: list[csi_pb2.VolumeCapability]
) -> grpc.StatusCode:
    return rpc_error(lambda: validate(driver, volume_id, caps)).code()


# -- GetCapacity -------------------------------------------------------------------------
def capacity(driver: RunningDriver, **fields: object) -> csi_pb2.GetCapacityResponse:
    return driver.client.controller.GetCapacity(csi_pb2.GetCapacityRequest(**fields))


def test_capacity(driver: RunningDriver) -> None:
    assert capacity(driver).available_capacity > 0
    local = csi_pb2.Topology(segments={TOPOLOGY_KEY: NODE})
    assert capacity(driver, accessible_topology=local).available_capacity > 0
    other = csi_pb2.Topology(segments={TOPOLOGY_KEY: "other-node"})
    assert capacity(driver, accessible_topology=other).available_capacity == 0


def test_capacity_minimum_sizes(driver: RunningDriver) -> None:
    assert capacity(driver, parameters={"fsType": "xfs"}).minimum_volume_size.value == 300 * MIB
    xfs = capacity(driver, parameters={"csi.storage.k8s.io/fstype": "xfs"})
    assert xfs.minimum_volume_size.value == 300 * MIB
    assert capacity(driver, parameters=DIRECTORY).minimum_volume_size.value == 1


def test_capacity_unsupported_mode_is_zero(driver: RunningDriver) -> None:
    caps = [mount_capability(mode=Mode.MULTI_NODE_MULTI_WRITER)]
    assert capacity(driver, volume_capabilities=caps).available_capacity == 0


def test_capacity_limit_shrinks_as_volumes_are_made(tmp_path: Path) -> None:
    with running_driver(tmp_path / "data", capacity_limit=10 * MIB) as running:
        assert capacity(running, parameters=DIRECTORY).available_capacity == 10 * MIB
        create(running.client, "pvc-1", required=4 * MIB)
        response = capacity(running, parameters=DIRECTORY)
        assert response.available_capacity == 6 * MIB
        assert response.maximum_volume_size.value == 6 * MIB


# -- restart -----------------------------------------------------------------------------
def test_restart_keeps_volumes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_driver(data) as running:
        ids = [create(running.client, f"pvc-{i}", required=2 * MIB).volume_id for i in range(3)]
        (data / "volumes" / ids[0] / "kept.txt").write_text("hello")
    with running_driver(data) as running:
        assert sorted(list_all(running.client)) == sorted(ids)
        again = create(running.client, "pvc-0", required=2 * MIB)
        assert again.volume_id == ids[0]
        assert (data / "volumes" / ids[0] / "kept.txt").read_text() == "hello"
        error = rpc_error(lambda: create(running.client, "pvc-1", required=4 * MIB))
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize("damage", ["{", "[]", ""])
def test_restart_with_damaged_record(tmp_path: Path, damage: str) -> None:
    data = tmp_path / "data"
    with running_driver(data) as running:
        broken = create(running.client, "pvc-broken").volume_id
        fine = create(running.client, "pvc-fine").volume_id
    record = data / "state" / "volumes" / f"{broken}.json"
    record.write_text(damage)
    with running_driver(data) as running:
        assert running.client.identity.Probe(csi_pb2.ProbeRequest()).ready.value is True
        assert list_all(running.client) == [fine]
        error = rpc_error(lambda: create(running.client, "pvc-broken"))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        delete = csi_pb2.DeleteVolumeRequest(volume_id=broken)
        error = rpc_error(lambda: running.client.controller.DeleteVolume(delete))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert record.read_text() == damage
    assert (data / "volumes" / broken).is_dir()
