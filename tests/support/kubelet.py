"""The caller's side: capabilities, kinds of volume, and a kubelet/provisioner stand-in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from csi.pb import csi_pb2

if TYPE_CHECKING:
    from tests.support.driver import Client

MIB = 1024 * 1024
Mode = csi_pb2.VolumeCapability.AccessMode
MULTI_WRITER = Mode.SINGLE_NODE_MULTI_WRITER
SINGLE_WRITER = Mode.SINGLE_NODE_SINGLE_WRITER
READER_ONLY = Mode.SINGLE_NODE_READER_ONLY
PARAMETERS_SIZE = 16 * MIB  # what ``Kubelet.create`` asks for given bare parameters


def mount_capability(
    fs_type: str = "",
    mode: int = csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER,
    flags: tuple[str, ...] = (),
) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(flags)),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode),  # type: ignore[arg-type]
    )


def block_capability(
    mode: int = csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER,
) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        block=csi_pb2.VolumeCapability.BlockVolume(),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode),  # type: ignore[arg-type]
    )


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


@dataclass
class Kubelet:
    """Plays kubelet and provisioner: picks paths under ``root`` and calls the driver.

    Node calls take a capability; without one they use a single-writer mount capability
    (with ``flags`` as its mount flags), as a plain filesystem volume's pod would.
    """

    client: Client
    root: Path
    data_dir: Path

    # -- paths -------------------------------------------------------------------------
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

    # -- calls -------------------------------------------------------------------------
    def create(self, name: str, kind: Flavour | Mapping[str, str], size: int | None = None) -> str:
        """CreateVolume for a flavour (its size and capability) or for bare parameters
        (``PARAMETERS_SIZE`` and a mount capability)."""
        if isinstance(kind, Flavour):
            params, cap, default = kind.params, kind.cap(), kind.size
        else:
            params, cap, default = kind, mount_capability(), PARAMETERS_SIZE
        request = csi_pb2.CreateVolumeRequest(
            name=name,
            parameters=dict(params),
            capacity_range=csi_pb2.CapacityRange(required_bytes=default if size is None else size),
            volume_capabilities=[cap],
        )
        return str(self.client.controller.CreateVolume(request).volume.volume_id)

    def delete(self, volume_id: str) -> None:
        self.client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))

    def stage(
        self,
        volume_id: str,
        staging: Path,
        cap: csi_pb2.VolumeCapability | None = None,
        *,
        flags: tuple[str, ...] = (),
    ) -> None:
        self.client.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume_id,
                staging_target_path=str(staging),
                volume_capability=mount_capability(flags=flags) if cap is None else cap,
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
        cap: csi_pb2.VolumeCapability | None = None,
        *,
        readonly: bool = False,
    ) -> None:
        self.client.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume_id,
                staging_target_path=str(staging),
                target_path=str(target),
                volume_capability=mount_capability() if cap is None else cap,
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
