"""Request builders and on-disk checks shared by the unit tests that talk to the server."""

from __future__ import annotations

from pathlib import Path

from csi.config import MIB
from csi.pb import csi_pb2
from tests.support.driver import Client
from tests.support.kubelet import mount_capability

DIRECTORY = {"volumeType": "directory"}
TOPOLOGY_KEY = "topology.localvol.csi.dev/node"
NODE = "test-node"
Mode = csi_pb2.VolumeCapability.AccessMode.Mode


def create_request(
    name: str,
    *,
    required: int = MIB,
    limit: int = 0,
    parameters: dict[str, str] | None = None,
    caps: list[csi_pb2.VolumeCapability] | None = None,
) -> csi_pb2.CreateVolumeRequest:
    """A CreateVolume for a small directory volume (no root, no loop device needed)."""
    return csi_pb2.CreateVolumeRequest(
        name=name,
        capacity_range=csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit),
        volume_capabilities=[mount_capability()] if caps is None else caps,
        parameters=DIRECTORY if parameters is None else parameters,
    )


def create(client: Client, name: str, **kwargs: object) -> csi_pb2.Volume:
    response = client.controller.CreateVolume(create_request(name, **kwargs))  # type: ignore[arg-type]
    return response.volume


def on_disk(data_dir: Path) -> tuple[list[str], list[str]]:
    """Entries of data/volumes and data/state/volumes, to prove nothing was created."""
    volumes = sorted(p.name for p in (data_dir / "volumes").iterdir())
    records = sorted(p.name for p in (data_dir / "state" / "volumes").iterdir())
    return volumes, records


def list_all(client: Client, max_entries: int = 0) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        response = client.controller.ListVolumes(
            csi_pb2.ListVolumesRequest(max_entries=max_entries, starting_token=token)
        )
        ids += [e.volume.volume_id for e in response.entries]
        token = response.next_token
        if not token:
            return ids
