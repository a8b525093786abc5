"""Identity and Node RPCs through the real in-process server (directory volumes, no root)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from csi import __version__
from csi.layout import volume_id_for_name
from csi.pb import csi_pb2
from tests.support.driver import RunningDriver, running_driver
from tests.support.kubelet import mount_capability
from tests.support.status import rpc_error, status_of
from tests.unit.support import NODE, TOPOLOGY_KEY, create

Service = csi_pb2.PluginCapability.Service
Expansion = csi_pb2.PluginCapability.VolumeExpansion
NodeRPC = csi_pb2.NodeServiceCapability.RPC
UNKNOWN_ID = volume_id_for_name("never-created")


def test_plugin_info(driver: RunningDriver) -> None:
    info = driver.client.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert info.name == "localvol.csi.dev"
    assert info.vendor_version == __version__


def test_plugin_capabilities(driver: RunningDriver) -> None:
    response = driver.client.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    services = [c.service.type for c in response.capabilities if c.HasField("service")]
    assert sorted(services) == sorted(
        [
            Service.CONTROLLER_SERVICE,
            Service.VOLUME_ACCESSIBILITY_CONSTRAINTS,
            Service.GROUP_CONTROLLER_SERVICE,
            Service.SNAPSHOT_ACCESSIBILITY_CONSTRAINTS,
            Service.SNAPSHOT_METADATA_SERVICE,
        ]
    )
    expansion = [
        c.volume_expansion.type for c in response.capabilities if c.HasField("volume_expansion")
    ]
    assert expansion == [Expansion.ONLINE]
    assert len(response.capabilities) == 6


def test_probe_ready(driver: RunningDriver) -> None:
    response = driver.client.identity.Probe(csi_pb2.ProbeRequest())
    assert response.HasField("ready")
    assert response.ready.value is True


def test_node_get_info(driver: RunningDriver) -> None:
    info = driver.client.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
    assert info.node_id == NODE
    assert dict(info.accessible_topology.segments) == {TOPOLOGY_KEY: NODE}
    assert info.max_volumes_per_node == 0


def test_node_get_info_reports_limit(tmp_path: Path) -> None:
    with running_driver(tmp_path / "data", max_volumes_per_node=5, node_id="n-2") as running:
        info = running.client.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
    assert (info.node_id, info.max_volumes_per_node) == ("n-2", 5)
    assert dict(info.accessible_topology.segments) == {TOPOLOGY_KEY: "n-2"}


def test_node_get_capabilities(driver: RunningDriver) -> None:
    response = driver.client.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest())
    assert {c.rpc.type for c in response.capabilities} == {
        NodeRPC.STAGE_UNSTAGE_VOLUME,
        NodeRPC.GET_VOLUME_STATS,
        NodeRPC.SINGLE_NODE_MULTI_WRITER,
        NodeRPC.EXPAND_VOLUME,
        NodeRPC.VOLUME_MOUNT_GROUP,
        NodeRPC.GET_VOLUME_HEALTH,
        NodeRPC.GET_STORAGE_HEALTH,
        4,  # CSI 1.12's VOLUME_CONDITION, for Kubernetes 1.34-1.36
    }
    assert len(response.capabilities) == 8


def test_volume_stats_unknown_volume(driver: RunningDriver, tmp_path: Path) -> None:
    request = csi_pb2.NodeGetVolumeStatsRequest(volume_id=UNKNOWN_ID, volume_path=str(tmp_path))
    assert status_of(lambda: driver.client.node.NodeGetVolumeStats(request)) == (
        grpc.StatusCode.NOT_FOUND
    )


def test_volume_stats_missing_path(driver: RunningDriver) -> None:
    volume = create(driver.client, "stats")
    request = csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume.volume_id)
    error = rpc_error(lambda: driver.client.node.NodeGetVolumeStats(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "volume_path" in error.details()


def test_volume_stats_path_not_published(driver: RunningDriver, tmp_path: Path) -> None:
    volume = create(driver.client, "stats")
    request = csi_pb2.NodeGetVolumeStatsRequest(
        volume_id=volume.volume_id, volume_path=str(tmp_path)
    )
    assert status_of(lambda: driver.client.node.NodeGetVolumeStats(request)) == (
        grpc.StatusCode.NOT_FOUND
    )


@pytest.mark.parametrize("volume_id", ["", "../etc", "VOL"])
def test_volume_stats_bad_id(driver: RunningDriver, tmp_path: Path, volume_id: str) -> None:
    request = csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=str(tmp_path))
    assert status_of(lambda: driver.client.node.NodeGetVolumeStats(request)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def stage(driver: RunningDriver, volume_id: str, staging: str) -> grpc.StatusCode:
    request = csi_pb2.NodeStageVolumeRequest(
        volume_id=volume_id, staging_target_path=staging, volume_capability=mount_capability()
    )
    return status_of(lambda: driver.client.node.NodeStageVolume(request))


# The volume ID is one that does not exist: if the path check were missing the call would end
# NOT_FOUND instead of INVALID_ARGUMENT, and nothing is ever mounted.
def test_stage_refuses_symlink(driver: RunningDriver, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "staging-link"
    link.symlink_to(real)
    assert stage(driver, UNKNOWN_ID, str(link)) == grpc.StatusCode.INVALID_ARGUMENT
    assert stage(driver, UNKNOWN_ID, str(real)) == grpc.StatusCode.NOT_FOUND


def test_stage_refuses_data_dir(driver: RunningDriver) -> None:
    volume = create(driver.client, "inside")
    own_dir = driver.data_dir / "volumes" / volume.volume_id
    for inside in (driver.data_dir, own_dir, driver.data_dir / "state"):
        assert stage(driver, UNKNOWN_ID, str(inside)) == grpc.StatusCode.INVALID_ARGUMENT
    assert stage(driver, volume.volume_id, str(own_dir)) == grpc.StatusCode.INVALID_ARGUMENT


def test_stage_refuses_a_path_that_holds_the_data_dir(driver: RunningDriver) -> None:
    # A mount on an ancestor of the data root would hide every volume and record.
    volume = create(driver.client, "over-the-root")
    for holder in (driver.data_dir.parent, Path("/")):
        assert stage(driver, volume.volume_id, str(holder)) == grpc.StatusCode.INVALID_ARGUMENT
        request = csi_pb2.NodePublishVolumeRequest(
            volume_id=volume.volume_id,
            staging_target_path=str(driver.data_dir.parent / "elsewhere"),
            target_path=str(holder),
            volume_capability=mount_capability(),
        )
        node = driver.client.node
        assert status_of(lambda r=request, n=node: n.NodePublishVolume(r)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    record = driver.driver.volumes.store.get(volume.volume_id)
    assert record is not None
    assert not record.staging_path
    assert not record.targets


def test_stage_refuses_a_directory_that_is_not_empty(driver: RunningDriver, tmp_path: Path) -> None:
    volume = create(driver.client, "onto-files")
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "someone-elses").write_text("kept")
    assert stage(driver, volume.volume_id, str(staging)) == grpc.StatusCode.FAILED_PRECONDITION
    record = driver.driver.volumes.store.get(volume.volume_id)
    assert record is not None
    assert not record.staging_path
    assert (staging / "someone-elses").read_text() == "kept"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert stage(driver, volume.volume_id, str(empty)) == grpc.StatusCode.OK
    assert stage(driver, volume.volume_id, str(empty)) == grpc.StatusCode.OK  # a retry


@pytest.mark.parametrize("staging", ["", "relative/dir", "/tmp/../etc"])
def test_stage_refuses_bad_paths(driver: RunningDriver, staging: str) -> None:
    assert stage(driver, UNKNOWN_ID, staging) == grpc.StatusCode.INVALID_ARGUMENT


def test_stage_requires_capability(driver: RunningDriver, tmp_path: Path) -> None:
    request = csi_pb2.NodeStageVolumeRequest(
        volume_id=UNKNOWN_ID, staging_target_path=str(tmp_path)
    )
    assert status_of(lambda: driver.client.node.NodeStageVolume(request)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_publish_refuses_target_equal_to_staging(driver: RunningDriver, tmp_path: Path) -> None:
    request = csi_pb2.NodePublishVolumeRequest(
        volume_id=UNKNOWN_ID,
        staging_target_path=str(tmp_path),
        target_path=str(tmp_path),
        volume_capability=mount_capability(),
    )
    assert status_of(lambda: driver.client.node.NodePublishVolume(request)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
