"""CSI GroupController: snapshots of several volumes taken at one instant."""

from __future__ import annotations

from contextlib import ExitStack

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from csi.errors import AlreadyExists, InvalidArgument, NotFound
from csi.layout import check_id, group_snapshot_id_for_name
from csi.locks import KeyedLocks
from csi.pb import csi_pb2, csi_pb2_grpc
from csi.services.snapshot_rpcs import snapshot_message
from csi.state.records import GroupSnapshotRecord, Phase, VolumeRecord
from csi.validation import check_map, check_name
from csi.volumes.groups import GroupSnapshots
from csi.volumes.manager import Volumes
from csi.volumes.params import check_snapshot_parameters

RPC = csi_pb2.GroupControllerServiceCapability.RPC


class GroupControllerService(csi_pb2_grpc.GroupControllerServicer):
    def __init__(self, volumes: Volumes, groups: GroupSnapshots, locks: KeyedLocks) -> None:
        self._volumes = volumes
        self._groups = groups
        self._locks = locks

    def _message(self, group: GroupSnapshotRecord) -> csi_pb2.VolumeGroupSnapshot:
        created = Timestamp()
        created.FromNanoseconds(int(group.created_at * 1e9))
        return csi_pb2.VolumeGroupSnapshot(
            group_snapshot_id=group.group_snapshot_id,
            snapshots=[snapshot_message(s) for s in self._groups.members(group)],
            creation_time=created,
            ready_to_use=group.phase is Phase.READY,
        )

    def _source(self, volume_id: str) -> VolumeRecord:
        return self._volumes.store.require_ready(volume_id)

    def _refuse_quarantined(self, group_id: str) -> None:
        self._groups.store.check_usable(group_id)

    def _group(self, group_id: str, snapshot_ids: list[str]) -> GroupSnapshotRecord | None:
        group = self._groups.store.get(group_id)
        if group is None:
            return None
        if snapshot_ids and sorted(snapshot_ids) != sorted(group.snapshot_ids):
            raise InvalidArgument("snapshot_ids do not match the group snapshot's members")
        return group

    def CreateVolumeGroupSnapshot(
        self, request: csi_pb2.CreateVolumeGroupSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.CreateVolumeGroupSnapshotResponse:
        name = check_name(request.name)
        if not request.source_volume_ids:
            raise InvalidArgument("source_volume_ids is required")
        source_ids = [check_id(v, "source_volume_ids") for v in request.source_volume_ids]
        if len(set(source_ids)) != len(source_ids):
            raise InvalidArgument("source_volume_ids lists a volume twice")
        check_map(request.secrets, "secrets")
        check_snapshot_parameters(request.parameters)
        group_id = group_snapshot_id_for_name(name)
        self._refuse_quarantined(group_id)
        with ExitStack() as stack:
            stack.enter_context(self._locks.hold(group_id))
            existing = self._groups.store.get(group_id)
            if existing is not None and sorted(existing.source_volume_ids) != sorted(source_ids):
                raise AlreadyExists("a group snapshot with this name has other source volumes")
            if existing is not None and existing.phase is Phase.READY:
                return csi_pb2.CreateVolumeGroupSnapshotResponse(
                    group_snapshot=self._message(existing)
                )
            for volume_id in sorted(source_ids):
                stack.enter_context(self._locks.hold(volume_id))
            sources = [self._source(v) for v in source_ids]
            group = self._groups.create(name, sources)
        return csi_pb2.CreateVolumeGroupSnapshotResponse(group_snapshot=self._message(group))

    def DeleteVolumeGroupSnapshot(
        self, request: csi_pb2.DeleteVolumeGroupSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.DeleteVolumeGroupSnapshotResponse:
        group_id = check_id(request.group_snapshot_id, "group_snapshot_id")
        check_map(request.secrets, "secrets")
        self._refuse_quarantined(group_id)
        with ExitStack() as stack:
            stack.enter_context(self._locks.hold(group_id))
            group = self._group(group_id, list(request.snapshot_ids))
            if group is not None:
                for snapshot_id in sorted(group.snapshot_ids):  # a restore may be reading one
                    stack.enter_context(self._locks.hold(snapshot_id))
                self._groups.delete(group)
        return csi_pb2.DeleteVolumeGroupSnapshotResponse()

    def GetVolumeGroupSnapshot(
        self, request: csi_pb2.GetVolumeGroupSnapshotRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetVolumeGroupSnapshotResponse:
        group_id = check_id(request.group_snapshot_id, "group_snapshot_id")
        self._refuse_quarantined(group_id)
        group = self._group(group_id, list(request.snapshot_ids))
        if group is None or group.phase is not Phase.READY:
            raise NotFound(f"group snapshot {group_id} does not exist")
        return csi_pb2.GetVolumeGroupSnapshotResponse(group_snapshot=self._message(group))

    def GroupControllerGetCapabilities(
        self,
        request: csi_pb2.GroupControllerGetCapabilitiesRequest,
        context: grpc.ServicerContext,
    ) -> csi_pb2.GroupControllerGetCapabilitiesResponse:
        cap = csi_pb2.GroupControllerServiceCapability(
            rpc=RPC(type=RPC.CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT)
        )
        return csi_pb2.GroupControllerGetCapabilitiesResponse(capabilities=[cap])
