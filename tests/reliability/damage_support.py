"""The calls a damaged volume must refuse, and the ones a healthy neighbour must still serve."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from csi.pb import csi_pb2
from tests.support.driver import Client, DriverProcess
from tests.support.kubelet import MIB, Flavour, mount_capability

EXT4 = Flavour("ext4", {"volumeType": "loop", "fsType": "ext4"}, 16 * MIB, fs_type="ext4")
DAMAGED_NAME, HEALTHY_NAME = "damaged-volume", "healthy-volume"


def calls_for(
    client: Client, volume_id: str, kubelet_root: Path
) -> dict[str, Callable[[], object]]:
    """Every RPC that names the volume, each with otherwise valid arguments."""
    c, n, cap = client.controller, client.node, mount_capability()
    staging, target = str(kubelet_root / "staging"), str(kubelet_root / "target")
    size = csi_pb2.CapacityRange(required_bytes=EXT4.size)
    grow = csi_pb2.CapacityRange(required_bytes=2 * EXT4.size)
    params = dict(EXT4.params)
    return {
        "CreateVolume": lambda: c.CreateVolume(
            csi_pb2.CreateVolumeRequest(
                name=DAMAGED_NAME, parameters=params, capacity_range=size, volume_capabilities=[cap]
            )
        ),
        "DeleteVolume": lambda: c.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id)),
        "ControllerGetVolume": lambda: c.ControllerGetVolume(
            csi_pb2.ControllerGetVolumeRequest(volume_id=volume_id)
        ),
        "ControllerExpandVolume": lambda: c.ControllerExpandVolume(
            csi_pb2.ControllerExpandVolumeRequest(volume_id=volume_id, capacity_range=grow)
        ),
        "ValidateVolumeCapabilities": lambda: c.ValidateVolumeCapabilities(
            csi_pb2.ValidateVolumeCapabilitiesRequest(
                volume_id=volume_id, volume_capabilities=[cap]
            )
        ),
        "CreateSnapshot": lambda: c.CreateSnapshot(
            csi_pb2.CreateSnapshotRequest(name="snap-of-damaged", source_volume_id=volume_id)
        ),
        "NodeStageVolume": lambda: n.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume_id, staging_target_path=staging, volume_capability=cap
            )
        ),
        "NodePublishVolume": lambda: n.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume_id,
                staging_target_path=staging,
                target_path=target,
                volume_capability=cap,
            )
        ),
        "NodeUnpublishVolume": lambda: n.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target)
        ),
        "NodeUnstageVolume": lambda: n.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=staging)
        ),
        "NodeGetVolumeStats": lambda: n.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=staging)
        ),
        "NodeExpandVolume": lambda: n.NodeExpandVolume(
            csi_pb2.NodeExpandVolumeRequest(volume_id=volume_id, volume_path=staging)
        ),
    }


def serve_normally(driver: DriverProcess, volume_id: str) -> None:
    """The healthy volume goes through stage, publish, write, read and back."""
    kubelet = driver.kubelet
    staging, target = kubelet.staging(volume_id), kubelet.target("healthy-pod")
    kubelet.stage(volume_id, staging, EXT4.cap())
    kubelet.publish(volume_id, staging, target, EXT4.cap())
    (target / "hello").write_text("served")
    assert (target / "hello").read_text() == "served"
    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
