"""Snapshots: independent, point-in-time copies of a volume's content.

A loop volume's snapshot is a copy of its image (a reflink where the data root supports it,
a sparse copy otherwise); a directory volume's is a copy of its tree. A mounted loop
filesystem is frozen while it is copied, so the snapshot is consistent; a group snapshot
freezes every member before copying any. Snapshots do not depend on their source: the
volume can be deleted and its snapshots still restore.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from csi.errors import FailedPrecondition
from csi.faults import crash_point
from csi.host import files
from csi.host.freeze import frozen
from csi.host.fs import durable_rename
from csi.layout import Layout, snapshot_id_for_name
from csi.state.records import Phase, SnapshotRecord, VolumeRecord
from csi.state.store import SnapshotStore
from csi.volumes.backend import facts_for
from csi.volumes.manager import Volumes


class Snapshots:
    def __init__(self, volumes: Volumes, store: SnapshotStore) -> None:
        self.volumes = volumes
        self.store = store
        self.layout: Layout = volumes.layout

    def holds(self, snapshot_id: str) -> bool:
        """True if a finished snapshot of this ID lives on this node."""
        record = self.store.get(snapshot_id)
        return record is not None and record.phase is Phase.READY

    def content_path(self, snapshot: SnapshotRecord) -> Path:
        suffix = facts_for(snapshot).content_suffix
        return self.layout.snapshot_path(snapshot.snapshot_id, suffix)

    def freeze_points(self, record: VolumeRecord) -> list[str]:
        """Mount points to freeze for a consistent copy of ``record`` (mounted loop fs)."""
        return self.volumes.backend(record).freeze_points(record)

    def source_path(self, record: VolumeRecord) -> Path:
        return self.volumes.backend(record).path(record)

    def take(
        self, names: Sequence[str], sources: Sequence[VolumeRecord], group_id: str = ""
    ) -> list[SnapshotRecord]:
        """Snapshot each source under the matching name, all at one instant.

        Finished snapshots are returned as they are (a retry); unfinished ones are redone.
        On failure every snapshot this call started is removed.
        """
        now = time.time()
        wanted: list[SnapshotRecord] = []
        for name, source in zip(names, sources, strict=True):
            snapshot_id = snapshot_id_for_name(name)
            existing = self.store.get(snapshot_id)
            if existing is not None and existing.phase is Phase.READY:
                wanted.append(existing)
                continue
            record = SnapshotRecord(
                snapshot_id=snapshot_id,
                name=name,
                source_volume_id=source.volume_id,
                kind=source.kind,
                access_type=source.access_type,
                fs_type=source.fs_type,
                size_bytes=source.capacity_bytes,
                created_at=now,
                group_snapshot_id=group_id,
                encrypted=source.spec.encrypted,
            )
            self.store.put(record)
            crash_point("snapshot:record")
            wanted.append(record)
        todo = [(s, v) for s, v in zip(wanted, sources, strict=True) if s.phase is not Phase.READY]
        if not todo:
            return wanted
        points = [p for _, volume in todo for p in self.freeze_points(volume)]
        done: list[SnapshotRecord] = []
        try:
            with frozen(points):
                for snapshot, volume in todo:
                    self._copy(self.source_path(volume), snapshot)
                crash_point("snapshot:copied")
            for snapshot in wanted:
                if snapshot.phase is not Phase.READY:
                    snapshot = snapshot.with_changes(phase=Phase.READY)
                    self.store.put(snapshot)
                done.append(snapshot)
        except BaseException:
            for snapshot, _ in todo:
                self._discard(snapshot)
            raise
        return done

    def _discard(self, snapshot: SnapshotRecord) -> None:
        """Undo a snapshot never answered: content first, then the record, with no write
        in between (the disk may be full)."""
        final = self.content_path(snapshot)
        files.remove(self.layout.partial(final))
        files.remove(final)
        self.store.remove(snapshot.snapshot_id)

    def _copy(self, source: Path, snapshot: SnapshotRecord) -> None:
        if not source.exists():
            raise FailedPrecondition("the source volume's data is missing on this node")
        final = self.content_path(snapshot)
        partial = self.layout.partial(final)
        files.remove(partial)
        try:
            self.volumes.backend(snapshot).copy_content(source, partial)
            files.remove(final)
            durable_rename(partial, final)
        except BaseException:
            files.remove(partial)
            raise

    def delete(self, snapshot: SnapshotRecord) -> None:
        if snapshot.phase is not Phase.DELETING:
            snapshot = snapshot.with_changes(phase=Phase.DELETING)
            self.store.put(snapshot)
        final = self.content_path(snapshot)
        files.remove(self.layout.partial(final))
        files.remove(final)
        self.store.remove(snapshot.snapshot_id)
