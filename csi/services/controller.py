"""CSI Controller: create, delete, list and describe volumes on this node."""

from __future__ import annotations

import re

import grpc
from google.protobuf import wrappers_pb2

from csi.config import Config
from csi.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from csi.layout import check_id, volume_id_for_name
from csi.locks import KeyedLocks
from csi.pb import csi_pb2, csi_pb2_grpc
from csi.state.records import AccessType, Phase, VolumeRecord
from csi.validation import (
    check_map,
    check_name,
    parse_capabilities,
    parse_capability,
    unsupported_reason,
)
from csi.volumes import sizing
from csi.volumes.manager import Volumes
from csi.volumes.params import VolumeSpec, parse_spec

RPC = csi_pb2.ControllerServiceCapability.RPC
CAPABILITIES = (
    RPC.CREATE_DELETE_VOLUME,
    RPC.LIST_VOLUMES,
    RPC.GET_CAPACITY,
    RPC.GET_VOLUME,
    RPC.SINGLE_NODE_MULTI_WRITER,
)
TOKEN_PATTERN = re.compile(r"vol-[0-9a-f]{32}")


class ControllerService(csi_pb2_grpc.ControllerServicer):
    def __init__(self, config: Config, volumes: Volumes, locks: KeyedLocks) -> None:
        self._config = config
        self._volumes = volumes
        self._store = volumes.store
        self._locks = locks

    # -- helpers -------------------------------------------------------------------
    def _topology(self) -> csi_pb2.Topology:
        return csi_pb2.Topology(segments={self._config.topology_key: self._config.node_id})

    def _is_local(self, topology: csi_pb2.Topology) -> bool:
        segments = dict(topology.segments)
        return segments.get(self._config.topology_key, self._config.node_id) == self._config.node_id

    def _volume(self, record: VolumeRecord) -> csi_pb2.Volume:
        context = dict(record.parameters)
        return csi_pb2.Volume(
            volume_id=record.volume_id,
            capacity_bytes=self._volumes.capacity_on_disk(record),
            volume_context=context,
            accessible_topology=[self._topology()],
        )

    def _ready_record(self, volume_id: str) -> VolumeRecord:
        if self._store.is_quarantined(volume_id):
            raise FailedPrecondition("the volume's state record is damaged; see the driver log")
        record = self._store.get(volume_id)
        if record is None or record.phase is not Phase.READY:
            raise NotFound(f"volume {volume_id} does not exist")
        return record

    # -- RPCs ----------------------------------------------------------------------
    def CreateVolume(
        self, request: csi_pb2.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.CreateVolumeResponse:
        name = check_name(request.name)
        caps = parse_capabilities(request.volume_capabilities)
        spec = parse_spec(
            request.parameters, [c.access_type for c in caps], [c.fs_type for c in caps]
        )
        check_map(request.secrets, "secrets")
        if request.HasField("volume_content_source"):
            raise InvalidArgument("creating a volume from a snapshot or volume is not supported")
        if request.mutable_parameters:
            raise InvalidArgument("mutable_parameters are not supported")
        requirement = request.accessibility_requirements
        if requirement.requisite and not any(self._is_local(t) for t in requirement.requisite):
            raise ResourceExhausted(
                f"volumes can only be provisioned on this node ({self._config.node_id})"
            )
        required = request.capacity_range.required_bytes
        limit = request.capacity_range.limit_bytes
        size = sizing.choose_size(required, limit, spec, self._config)
        volume_id = volume_id_for_name(name)
        if self._store.is_quarantined(volume_id):
            raise FailedPrecondition("this name's state record is damaged; see the driver log")

        with self._locks.hold(volume_id):
            existing = self._volumes.existing_for_name(name)
            if existing is not None and existing.phase is Phase.READY:
                self._check_compatible(existing, spec, required, limit)
                return csi_pb2.CreateVolumeResponse(volume=self._volume(existing))
            self._check_room(size)
            record = self._volumes.create(name, spec, size)
        return csi_pb2.CreateVolumeResponse(volume=self._volume(record))

    def _check_compatible(
        self, existing: VolumeRecord, spec: VolumeSpec, required: int, limit: int
    ) -> None:
        if existing.parameters != spec.parameters() or existing.access_type is not spec.access_type:
            raise AlreadyExists("a volume with this name exists with different parameters")
        if not sizing.fits(existing, required, limit):
            raise AlreadyExists(
                f"a volume with this name exists with capacity {existing.capacity_bytes} bytes"
            )

    def _check_room(self, size: int) -> None:
        limit = self._config.max_volumes_per_node
        if limit and self._store.count() >= limit:
            raise ResourceExhausted(f"this node already holds its maximum of {limit} volumes")
        free = sizing.available_capacity(self._config, self._store.all())
        if size > free:
            raise ResourceExhausted(f"{size} bytes requested, only {free} bytes available")

    def DeleteVolume(
        self, request: csi_pb2.DeleteVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.DeleteVolumeResponse:
        volume_id = check_id(request.volume_id)
        check_map(request.secrets, "secrets")
        if self._store.is_quarantined(volume_id):
            raise FailedPrecondition("the volume's state record is damaged; see the driver log")
        with self._locks.hold(volume_id):
            record = self._store.get(volume_id)
            if record is not None:
                self._volumes.delete(record)
        return csi_pb2.DeleteVolumeResponse()

    def ValidateVolumeCapabilities(
        self, request: csi_pb2.ValidateVolumeCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        volume_id = check_id(request.volume_id)
        if not request.volume_capabilities:
            raise InvalidArgument("volume_capabilities is required")
        record = self._ready_record(volume_id)
        for cap in request.volume_capabilities:
            reason = unsupported_reason(cap)
            if reason is None and cap.WhichOneof("access_type") != record.access_type.value:
                reason = f"volume was created for {record.access_type.value} access"
            fs_type = cap.mount.fs_type
            if reason is None and fs_type and record.fs_type and fs_type != record.fs_type:
                reason = f"volume holds {record.fs_type}, not {fs_type}"
            if reason is not None:
                return csi_pb2.ValidateVolumeCapabilitiesResponse(message=reason)
        if request.parameters:
            try:
                spec = parse_spec(
                    request.parameters,
                    [record.access_type],
                    [record.fs_type],
                )
            except InvalidArgument as exc:
                return csi_pb2.ValidateVolumeCapabilitiesResponse(message=exc.message)
            if spec.parameters() != record.parameters:
                return csi_pb2.ValidateVolumeCapabilitiesResponse(
                    message="parameters differ from the volume's"
                )
        confirmed = csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=request.volume_context,
            volume_capabilities=request.volume_capabilities,
            parameters=request.parameters,
        )
        return csi_pb2.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    def ListVolumes(
        self, request: csi_pb2.ListVolumesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ListVolumesResponse:
        if request.max_entries < 0:
            raise InvalidArgument("max_entries must not be negative")
        token = request.starting_token
        if token and not TOKEN_PATTERN.fullmatch(token):
            raise Aborted("starting_token is not one this driver issued")
        ids = [i for i in self._store.sorted_ids() if not token or i > token]
        entries: list[csi_pb2.ListVolumesResponse.Entry] = []
        next_token = ""
        for volume_id in ids:
            record = self._store.get(volume_id)
            if record is None or record.phase is not Phase.READY:
                continue
            if request.max_entries and len(entries) == request.max_entries:
                next_token = entries[-1].volume.volume_id
                break
            entries.append(csi_pb2.ListVolumesResponse.Entry(volume=self._volume(record)))
        return csi_pb2.ListVolumesResponse(entries=entries, next_token=next_token)

    def ControllerGetVolume(
        self, request: csi_pb2.ControllerGetVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerGetVolumeResponse:
        record = self._ready_record(check_id(request.volume_id))
        status = csi_pb2.ControllerGetVolumeResponse.VolumeStatus(
            published_node_ids=[self._config.node_id] if record.targets else []
        )
        return csi_pb2.ControllerGetVolumeResponse(volume=self._volume(record), status=status)

    def GetCapacity(
        self, request: csi_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> csi_pb2.GetCapacityResponse:
        empty = csi_pb2.GetCapacityResponse(available_capacity=0)
        if request.HasField("accessible_topology") and not self._is_local(
            request.accessible_topology
        ):
            return empty
        if any(unsupported_reason(cap) for cap in request.volume_capabilities):
            return empty
        caps = [parse_capability(cap) for cap in request.volume_capabilities]
        access = [c.access_type for c in caps] or [AccessType.MOUNT]
        spec = parse_spec(request.parameters, access, [c.fs_type for c in caps])
        available = sizing.available_capacity(self._config, self._store.all())
        response = csi_pb2.GetCapacityResponse(
            available_capacity=available,
            maximum_volume_size=wrappers_pb2.Int64Value(
                value=min(available, self._config.max_volume_size)
            ),
        )
        response.minimum_volume_size.value = sizing.minimum_size(spec)
        return response

    def ControllerGetCapabilities(
        self, request: csi_pb2.ControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerGetCapabilitiesResponse:
        return csi_pb2.ControllerGetCapabilitiesResponse(
            capabilities=[
                csi_pb2.ControllerServiceCapability(rpc=RPC(type=t)) for t in CAPABILITIES
            ]
        )
