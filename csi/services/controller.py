"""CSI Controller: create, delete, list and describe volumes on this node."""

from __future__ import annotations

import logging
import threading

import grpc
from google.protobuf import wrappers_pb2

from csi import paging
from csi.config import Config
from csi.errors import (
    InvalidArgument,
    ResourceExhausted,
)
from csi.layout import check_id
from csi.locks import KeyedLocks
from csi.pb import csi_pb2, csi_pb2_grpc
from csi.services import legacy_condition
from csi.services.health_rpcs import ControllerHealthRpcs
from csi.services.snapshot_rpcs import SnapshotRpcs
from csi.state.records import AccessType, Phase, VolumeRecord
from csi.validation import (
    check_map,
    check_name,
    mismatch,
    parse_capabilities,
    parse_capability,
    unsupported_reason,
)
from csi.volumes import encryption, health, sizing
from csi.volumes.backend import facts_for
from csi.volumes.manager import Volumes
from csi.volumes.params import (
    check_mount_options_allowed,
    claim_of,
    parse_spec,
    volume_context,
)
from csi.volumes.provisioning import NewVolume, Provisioner, SourceRef
from csi.volumes.snapshots import Snapshots

log = logging.getLogger(__name__)
RPC = csi_pb2.ControllerServiceCapability.RPC
# Distinct GetCapacity parameter problems logged (each once); beyond it, no more are noted.
MAX_NOTED_PROBLEMS = 256
CAPABILITIES = (
    RPC.CREATE_DELETE_VOLUME,
    RPC.LIST_VOLUMES,
    RPC.GET_CAPACITY,
    RPC.GET_VOLUME,
    RPC.SINGLE_NODE_MULTI_WRITER,
    RPC.CREATE_DELETE_SNAPSHOT,
    RPC.LIST_SNAPSHOTS,
    RPC.GET_SNAPSHOT,
    RPC.CLONE_VOLUME,
    RPC.EXPAND_VOLUME,
    RPC.LIST_VOLUMES_PUBLISHED_NODES,
    RPC.GET_VOLUME_HEALTH,
    RPC.LIST_VOLUME_HEALTH,
)


def _source(request: csi_pb2.CreateVolumeRequest) -> SourceRef | None:
    """The content source the request names, its ID checked; None without one."""
    if not request.HasField("volume_content_source"):
        return None
    content = request.volume_content_source
    which = content.WhichOneof("type")
    if which == "snapshot":
        return SourceRef("snapshot", check_id(content.snapshot.snapshot_id, "snapshot_id"))
    if which == "volume":
        return SourceRef("volume", check_id(content.volume.volume_id, "source volume_id"))
    raise InvalidArgument("volume_content_source names neither a snapshot nor a volume")


class ControllerService(SnapshotRpcs, ControllerHealthRpcs, csi_pb2_grpc.ControllerServicer):
    def __init__(
        self,
        config: Config,
        volumes: Volumes,
        snapshots: Snapshots,
        provisioner: Provisioner,
        locks: KeyedLocks,
    ) -> None:
        self._config = config
        self._volumes = volumes
        self._snapshots = snapshots
        self._provisioner = provisioner
        self._store = volumes.store
        self._locks = locks
        self._noted_problems: set[str] = set()  # GetCapacity's parameter problems, logged once
        self._noted_lock = threading.Lock()

    # -- helpers -------------------------------------------------------------------
    def _topology(self) -> csi_pb2.Topology:
        return csi_pb2.Topology(segments={self._config.topology_key: self._config.node_id})

    def _is_local(self, topology: csi_pb2.Topology) -> bool:
        segments = dict(topology.segments)
        return segments.get(self._config.topology_key, self._config.node_id) == self._config.node_id

    def _volume(self, record: VolumeRecord) -> csi_pb2.Volume:
        volume = csi_pb2.Volume(
            volume_id=record.volume_id,
            capacity_bytes=self._volumes.capacity_on_disk(record),
            volume_context=volume_context(record.spec),
            accessible_topology=[self._topology()],
        )
        kind, _, source_id = record.content_source.partition(":")
        if kind == "snapshot":
            volume.content_source.snapshot.snapshot_id = source_id
        elif kind == "volume":
            volume.content_source.volume.volume_id = source_id
        return volume

    def _legacy_condition(
        self,
        status: csi_pb2.ListVolumesResponse.VolumeStatus
        | csi_pb2.ControllerGetVolumeResponse.VolumeStatus,
        record: VolumeRecord,
        host: health.HostView | None = None,
    ) -> None:
        """The CSI 1.12 condition in ``status``, for peers that still read it."""
        if self._config.legacy_volume_condition:
            legacy_condition.attach(status, health.check(self._volumes, record, host))

    def _published_nodes(self, record: VolumeRecord) -> list[str]:
        return [self._config.node_id] if record.targets else []

    def _ready_record(self, volume_id: str) -> VolumeRecord:
        return self._store.require_ready(volume_id)

    # -- RPCs ----------------------------------------------------------------------
    def CreateVolume(
        self, request: csi_pb2.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.CreateVolumeResponse:
        name = check_name(request.name)
        caps = parse_capabilities(request.volume_capabilities)
        spec = parse_spec(
            request.parameters, [c.access_type for c in caps], [c.fs_type for c in caps]
        )
        for cap in caps:  # the class's mountOptions: refused before anything is made
            check_mount_options_allowed(spec, cap.mount_flags)
        check_map(request.secrets, "secrets")
        secret = (
            encryption.secret_from(request.secrets, encryption.SecretUse.PROVISION)
            if spec.encrypted
            else None
        )
        if request.mutable_parameters:
            raise InvalidArgument("mutable_parameters are not supported")
        requirement = request.accessibility_requirements
        if requirement.requisite and not any(self._is_local(t) for t in requirement.requisite):
            raise ResourceExhausted(
                f"volumes can only be provisioned on this node ({self._config.node_id})"
            )
        new = NewVolume(
            name=name,
            spec=spec,
            required=request.capacity_range.required_bytes,
            limit=request.capacity_range.limit_bytes,
            source=_source(request),
            secret=secret,
            claim=claim_of(request.parameters),
        )
        with self._locks.hold(new.id):
            record = self._provisioner.create(new)
        return csi_pb2.CreateVolumeResponse(volume=self._volume(record))

    def DeleteVolume(
        self, request: csi_pb2.DeleteVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.DeleteVolumeResponse:
        volume_id = check_id(request.volume_id)
        check_map(request.secrets, "secrets")
        self._store.check_usable(volume_id)
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
            if reason is None:
                reason = mismatch(parse_capability(cap), record.access_type, record.fs_type)
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
            if spec != record.spec:
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
        paging.check_max_entries(request.max_entries)
        after = paging.start_after(request.starting_token)
        ids = [i for i in self._store.sorted_ids() if i > after]
        host = health.HostView.read()  # one reading for the whole page
        entries: list[csi_pb2.ListVolumesResponse.Entry] = []
        next_token = ""
        for volume_id in ids:
            record = self._store.get(volume_id)
            if record is None or record.phase is not Phase.READY:
                continue
            if request.max_entries and len(entries) == request.max_entries:
                next_token = paging.issue(entries[-1].volume.volume_id)
                break
            status = csi_pb2.ListVolumesResponse.VolumeStatus(
                published_node_ids=self._published_nodes(record)
            )
            self._legacy_condition(status, record, host)
            entries.append(
                csi_pb2.ListVolumesResponse.Entry(volume=self._volume(record), status=status)
            )
        return csi_pb2.ListVolumesResponse(entries=entries, next_token=next_token)

    def ControllerGetVolume(
        self, request: csi_pb2.ControllerGetVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerGetVolumeResponse:
        record = self._ready_record(check_id(request.volume_id))
        status = csi_pb2.ControllerGetVolumeResponse.VolumeStatus(
            published_node_ids=self._published_nodes(record)
        )
        self._legacy_condition(status, record)
        return csi_pb2.ControllerGetVolumeResponse(volume=self._volume(record), status=status)

    def ControllerExpandVolume(
        self, request: csi_pb2.ControllerExpandVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerExpandVolumeResponse:
        volume_id = check_id(request.volume_id)
        if not request.HasField("capacity_range"):
            raise InvalidArgument("capacity_range is required")
        check_map(request.secrets, "secrets")
        required = request.capacity_range.required_bytes
        limit = request.capacity_range.limit_bytes
        if not required and not limit:
            raise InvalidArgument("capacity_range needs required_bytes or limit_bytes")
        with self._locks.hold(volume_id):
            record = self._ready_record(volume_id)
            if request.HasField("volume_capability"):
                cap = parse_capability(request.volume_capability)
                reason = mismatch(cap, record.access_type, record.fs_type)
                if reason is not None:
                    raise InvalidArgument(reason)
            record = self._provisioner.grow(record, required, limit)
        node_step = facts_for(record).node_expansion_required
        return csi_pb2.ControllerExpandVolumeResponse(
            capacity_bytes=record.capacity_bytes, node_expansion_required=node_step
        )

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
        try:
            spec = parse_spec(request.parameters, access, [c.fs_type for c in caps])
        except InvalidArgument as exc:
            # A StorageClass the driver refuses is a configuration error, not a lack of
            # room. Answering 0 (or failing, so no CSIStorageCapacity is published) makes
            # the scheduler say "did not have enough free storage" and the claim never
            # reaches CreateVolume, which is where the user reads the reason. So the node's
            # capacity is reported as for any class, and CreateVolume refuses with the
            # message (the claim's ProvisioningFailed event).
            self._note_problem(exc.message)
            spec = None
        available = sizing.available_capacity(self._config, self._volumes.ledger)
        # maximum_volume_size is the room the node has, not --max-volume-size: the
        # scheduler refuses a claim above it as "not enough free storage", which would hide
        # the real reason again. A claim above --max-volume-size passes scheduling and
        # CreateVolume answers OUT_OF_RANGE naming the request and the limit, on the claim.
        response = csi_pb2.GetCapacityResponse(
            available_capacity=available,
            maximum_volume_size=wrappers_pb2.Int64Value(value=available),
        )
        if spec is not None:
            response.minimum_volume_size.value = sizing.minimum_size(spec)
        return response

    def _note_problem(self, message: str) -> None:
        """Log a class's parameter problem at warning, once per distinct problem (the
        provisioner asks again every minute for every class)."""
        with self._noted_lock:
            if message in self._noted_problems or len(self._noted_problems) >= MAX_NOTED_PROBLEMS:
                return
            self._noted_problems.add(message)
        log.warning(
            "event=capacity_for_refused_parameters problem=%r "
            "action=capacity_reported_create_volume_refuses",
            message,
        )

    def ControllerGetCapabilities(
        self, request: csi_pb2.ControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerGetCapabilitiesResponse:
        offered = [
            t for t in CAPABILITIES if t != RPC.EXPAND_VOLUME or self._config.controller_expansion
        ]
        if self._config.legacy_volume_condition:
            offered.append(legacy_condition.CONTROLLER_CAPABILITY)  # type: ignore[arg-type]
        return csi_pb2.ControllerGetCapabilitiesResponse(
            capabilities=[csi_pb2.ControllerServiceCapability(rpc=RPC(type=t)) for t in offered]
        )
