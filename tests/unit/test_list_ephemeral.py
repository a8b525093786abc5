"""ListVolumes pagination when the store also holds an ephemeral inline volume."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from csi.layout import Layout
from csi.pb import csi_pb2
from csi.state.records import AccessType, Phase, VolumeKind, VolumeRecord, VolumeSpec
from csi.state.store import StateStore
from tests.support.driver import running_driver
from tests.unit.support import create

# The kubelet names an inline volume "csi-" + 64 hex digits; it sorts before "vol-...".
INLINE_ID = "csi-" + "ab" * 32


def _plant_inline_volume(data: Path) -> None:
    """What NodePublishVolume leaves on disk for an inline volume (publishing needs root)."""
    layout = Layout(data)
    layout.ensure()
    store = StateStore(layout)
    store.load()
    store.put(
        VolumeRecord(
            volume_id=INLINE_ID,
            name=f"ephemeral/{INLINE_ID}",
            spec=VolumeSpec(VolumeKind.DIRECTORY, AccessType.MOUNT, ""),
            capacity_bytes=1024 * 1024,
            created_at=time.time(),
            phase=Phase.READY,
            ephemeral=True,
        )
    )
    layout.directory_path(INLINE_ID).mkdir(mode=0o777)


def test_pagination_with_inline_volume(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _plant_inline_volume(data)
    with running_driver(data) as running:
        created = {create(running.client, f"pvc-{i}").volume_id for i in range(2)}
        seen: list[str] = []
        token = ""
        for _ in range(10):
            request = csi_pb2.ListVolumesRequest(max_entries=1, starting_token=token)
            try:
                response = running.client.controller.ListVolumes(request)
            except grpc.RpcError as exc:
                pytest.fail(f"page after token {token!r} failed: {exc.code().name}")
            seen += [e.volume.volume_id for e in response.entries]
            token = response.next_token
            if not token:
                break
        assert created <= set(seen)
        assert len(seen) == len(set(seen))
