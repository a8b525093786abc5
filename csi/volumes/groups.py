"""Group snapshots: one consistent instant across several volumes."""

from __future__ import annotations

import time
from collections.abc import Sequence

from csi.layout import group_snapshot_id_for_name, snapshot_id_for_name
from csi.state.records import GroupSnapshotRecord, Phase, SnapshotRecord, VolumeRecord
from csi.state.store import GroupSnapshotStore
from csi.volumes.snapshots import Snapshots


def member_name(group_name: str, volume_id: str) -> str:
    """The snapshot name of one member: stable, so a retried group finds its members."""
    return f"{group_name}/{volume_id}"


class GroupSnapshots:
    def __init__(self, snapshots: Snapshots, store: GroupSnapshotStore) -> None:
        self.snapshots = snapshots
        self.store = store

    def members(self, group: GroupSnapshotRecord) -> list[SnapshotRecord]:
        found = (self.snapshots.store.get(i) for i in group.snapshot_ids)
        return [s for s in found if s is not None]

    def create(self, name: str, sources: Sequence[VolumeRecord]) -> GroupSnapshotRecord:
        group_id = group_snapshot_id_for_name(name)
        existing = self.store.get(group_id)
        if existing is not None and existing.phase is Phase.READY:
            return existing
        names = [member_name(name, v.volume_id) for v in sources]
        group = GroupSnapshotRecord(
            group_snapshot_id=group_id,
            name=name,
            source_volume_ids=tuple(v.volume_id for v in sources),
            snapshot_ids=tuple(snapshot_id_for_name(n) for n in names),
            created_at=time.time(),
        )
        self.store.put(group)
        try:
            self.snapshots.take(names, sources, group_id=group_id)
        except BaseException:
            self.delete(group)
            raise
        ready = group.with_changes(phase=Phase.READY)
        self.store.put(ready)
        return ready

    def delete(self, group: GroupSnapshotRecord) -> None:
        if group.phase is not Phase.DELETING:
            group = group.with_changes(phase=Phase.DELETING)
            self.store.put(group)
        for snapshot in self.members(group):
            self.snapshots.delete(snapshot)
        self.store.remove(group.group_snapshot_id)
