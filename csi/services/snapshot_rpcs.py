"""Controller RPCs for snapshots; mixed into ControllerService."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from csi import paging
from csi.errors import AlreadyExists, FailedPrecondition
from csi.layout import check_id, snapshot_id_for_name
from csi.locks import KeyedLocks
from csi.pb import csi_pb2
from csi.state.records import Phase, SnapshotRecord, VolumeRecord
from csi.validation import check_map, check_name
from csi.volumes.params import check_snapshot_parameters
from csi.volumes.snapshots import Snapshots


def snapshot_message(record: SnapshotRecord) -> csi_pb2.Snapshot:
    created = Timestamp()
    created.FromNanoseconds(int(record.created_at * 1e9))
    return csi_pb2.Snapshot(
        snapshot_id=record.snapshot_id,
        source_volume_id=record.source_volume_id,
        size_bytes=record.size_bytes,
        creation_time=created,
        ready_to_use=record.phase is Phase.READY,
        group_snapshot_id=record.group_snapshot_id,
    )


class SnapshotRpcs:
    _snapshots: Snapshots
    _locks: KeyedLocks

    def _ready_record(self, volume_id: str) -> VolumeRecord:
        raise NotImplementedError

    def _ready_snapshot(self, snapshot_id: str) -> SnapshotRecord:
        return self._snapshots.store.require_ready(snapshot_id)

    def CreateSnapshot(
        self, request: csi_pb2.CreateSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.CreateSnapshotResponse:
        name = check_name(request.name)
        source_id = check_id(request.source_volume_id, "source_volume_id")
        check_map(request.secrets, "secrets")
        check_snapshot_parameters(request.parameters)
        snapshot_id = snapshot_id_for_name(name)
        self._snapshots.store.check_usable(snapshot_id)
        with self._locks.hold(snapshot_id):
            existing = self._snapshots.store.get(snapshot_id)
            if existing is not None and existing.source_volume_id != source_id:
                raise AlreadyExists("a snapshot with this name exists for another volume")
            if existing is not None and existing.phase is Phase.READY:
                return csi_pb2.CreateSnapshotResponse(snapshot=snapshot_message(existing))
            with self._locks.hold(source_id):
                source = self._ready_record(source_id)
                (snapshot,) = self._snapshots.take([name], [source])
        return csi_pb2.CreateSnapshotResponse(snapshot=snapshot_message(snapshot))

    def DeleteSnapshot(
        self, request: csi_pb2.DeleteSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.DeleteSnapshotResponse:
        snapshot_id = check_id(request.snapshot_id, "snapshot_id")
        check_map(request.secrets, "secrets")
        self._snapshots.store.check_usable(snapshot_id)
        with self._locks.hold(snapshot_id):
            record = self._snapshots.store.get(snapshot_id)
            if record is None:
                return csi_pb2.DeleteSnapshotResponse()
            if record.group_snapshot_id and record.phase is Phase.READY:
                raise FailedPrecondition(
                    f"snapshot belongs to group snapshot {record.group_snapshot_id}; "
                    "delete the group instead"
                )
            self._snapshots.delete(record)
        return csi_pb2.DeleteSnapshotResponse()

    def GetSnapshot(
        self, request: csi_pb2.GetSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetSnapshotResponse:
        record = self._ready_snapshot(check_id(request.snapshot_id, "snapshot_id"))
        return csi_pb2.GetSnapshotResponse(snapshot=snapshot_message(record))

    def ListSnapshots(
        self, request: csi_pb2.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ListSnapshotsResponse:
        paging.check_max_entries(request.max_entries)
        after = paging.start_after(request.starting_token)
        store = self._snapshots.store
        if request.snapshot_id:
            record = store.get(request.snapshot_id)
            records = [record] if record is not None else []
        else:
            records = [r for i in store.sorted_ids() if (r := store.get(i)) is not None]
        selected = [
            r
            for r in records
            if r.phase is Phase.READY
            and (not request.source_volume_id or r.source_volume_id == request.source_volume_id)
            and r.snapshot_id > after
        ]
        next_token = ""
        if request.max_entries and len(selected) > request.max_entries:
            selected = selected[: request.max_entries]
            next_token = paging.issue(selected[-1].snapshot_id)
        entries = [
            csi_pb2.ListSnapshotsResponse.Entry(snapshot=snapshot_message(r)) for r in selected
        ]
        return csi_pb2.ListSnapshotsResponse(entries=entries, next_token=next_token)
