"""After a power loss the node use on disk may be an older one: the driver must cope.

The node-use file is never fsynced, so after a power loss it may still say "staged at X,
published at T" although the orchestrator was told both were undone, while nothing at all
is mounted (a power loss took every mount and loop device). Played here by putting back
the older file the disk may have kept, then starting over: reconciliation, a stage
somewhere else and a delete must all work, for each kind of volume that stages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from csi.config import MIB
from csi.host import mount
from csi.layout import Layout
from csi.pb import csi_pb2
from csi.reconcile import reconcile
from csi.state.records import AccessType, VolumeKind, VolumeSpec
from csi.state.store import StateStore
from csi.validation import Capability
from csi.volumes.manager import Volumes

WRITER = csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
SPECS = {
    "directory": VolumeSpec(VolumeKind.DIRECTORY, AccessType.MOUNT, ""),
    "loop-ext4": VolumeSpec(VolumeKind.LOOP, AccessType.MOUNT, "ext4"),
    "block": VolumeSpec(VolumeKind.LOOP, AccessType.BLOCK, ""),
}


def started(layout: Layout) -> Volumes:
    volumes = Volumes(layout, StateStore(layout))
    report = reconcile(volumes)
    assert report.failed == []
    assert report.damaged == []
    return volumes


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_an_older_node_use_after_a_power_loss(tmp_path: Path, kind: str) -> None:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    volumes = started(layout)
    spec = SPECS[kind]
    cap = Capability(spec.access_type, WRITER, spec.fs_type, (), "")
    kubelet = tmp_path / "kubelet"
    old_staging, new_staging = kubelet / "old", kubelet / "new"
    target = kubelet / "pod" / "target"
    for path in (old_staging, new_staging, target.parent):
        path.mkdir(parents=True)
    record = volumes.create("pvc-power", spec, 16 * MIB)
    volume_id = record.volume_id
    use_file = layout.node_use_dir / f"{volume_id}.json"
    try:
        volumes.stage(record, old_staging, cap)
        volumes.publish(volumes.store.require_ready(volume_id), old_staging, target, cap, False)
        kept = use_file.read_bytes()  # what the disk still holds after the power loss
        volumes.unpublish(volumes.store.require_ready(volume_id), target)
        volumes.unstage(volumes.store.require_ready(volume_id), old_staging)
        old_staging.rmdir()  # the orchestrator removes a staging path once unstaged
        use_file.write_bytes(kept)

        volumes = started(layout)  # the driver after the reboot
        stale = volumes.store.require_ready(volume_id)
        assert stale.staging_path == str(old_staging)
        assert str(target) in stale.targets
        volumes.stage(stale, new_staging, cap)  # the next pod, elsewhere
        volumes.publish(volumes.store.require_ready(volume_id), new_staging, target, cap, False)
        assert mount.is_mount_point(target)
        volumes.unpublish(volumes.store.require_ready(volume_id), target)
        volumes.unstage(volumes.store.require_ready(volume_id), new_staging)
        assert not volumes.store.require_ready(volume_id).in_use

        use_file.write_bytes(kept)  # the same loss once more; now the volume goes
        volumes = started(layout)
        volumes.delete(volumes.store.require_ready(volume_id))
        assert volumes.store.get(volume_id) is None
        assert not use_file.exists()
    finally:
        for path in (target, new_staging, old_staging):
            mount.unmount(path)
