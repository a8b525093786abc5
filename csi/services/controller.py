"""CSI Controller: create, delete, list and describe volumes on this node."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import wrappers_pb2

from csi import paging
from csi.config import Config
from csi.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    OutOfRange,
    ResourceExhausted,
)
from csi.layout import check_id, volume_id_for_name
from csi.locks import KeyedLocks
from csi.pb import csi_pb2, csi_pb2_grpc
from csi.services.snapshot_rpcs import SnapshotRpcs
from csi.state.records import AccessType, Phase, VolumeKind, VolumeRecord
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
from csi.volumes.params import VolumeSpec, is_encrypted, parse_spec
from csi.volumes.snapshots import Snapshots

RPC = csi_pb2.ControllerServiceCapability.RPC
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
    RPC.VOLUME_CONDITION,
)

SourceKind = tuple[VolumeKind, AccessType, str, bool]


@dataclass(frozen=True)
class ContentSource:
    """What a new volume starts from: a snapshot or another volume."""

    label: str  # recorded on the volume, compared on retries
    kind_of: SourceKind
    size: int
    lock_key: str
    resolve: Callable[[], tuple[Path, list[str]]]  # content path, mount points to freeze


def _source_label(request: csi_pb2.CreateVolumeRequest) -> str:
    """How the volume records its source ("snapshot:<id>", "volume:<id>", or "")."""
    if not request.HasField("volume_content_source"):
        return ""
    content = request.volume_content_source
    which = content.WhichOneof("type")
    if which == "snapshot":
        return f"snapshot:{check_id(content.snapshot.snapshot_id, 'snapshot_id')}"
    if which == "volume":
        return f"volume:{check_id(content.volume.volume_id, 'source volume_id')}"
    raise InvalidArgument("volume_content_source names neither a snapshot nor a volume")


def _check_source_matches(kind_of: SourceKind, spec: VolumeSpec) -> None:
    kind, access_type, fs_type, encrypted = kind_of
    same = (kind, access_type, fs_type, encrypted) == (
        spec.kind,
        spec.access_type,
        spec.fs_type,
        spec.encrypted,
    )
    if not same:
        described = f"{kind.value}/{access_type.value}" + (f"/{fs_type}" if fs_type else "")
        described += " encrypted" if encrypted else ""
        raise InvalidArgument(f"the source is a {described} volume; request the same kind")


class ControllerService(SnapshotRpcs, csi_pb2_grpc.ControllerServicer):
    def __init__(
        self, config: Config, volumes: Volumes, snapshots: Snapshots, locks: KeyedLocks
    ) -> None:
        self._config = config
        self._volumes = volumes
        self._snapshots = snapshots
        self._store = volumes.store
        self._locks = locks
        self._reserving = threading.Lock()  # short: guards only the check and the table
        self._reserved: dict[str, int] = {}

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
            volume_context=dict(record.parameters),
            accessible_topology=[self._topology()],
        )
        kind, _, source_id = record.content_source.partition(":")
        if kind == "snapshot":
            volume.content_source.snapshot.snapshot_id = source_id
        elif kind == "volume":
            volume.content_source.volume.volume_id = source_id
        return volume

    def _condition(
        self, record: VolumeRecord, host: health.HostView | None = None
    ) -> csi_pb2.VolumeCondition:
        condition = health.check(self._volumes, record, host)
        return csi_pb2.VolumeCondition(abnormal=condition.abnormal, message=condition.message)

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
        check_map(request.secrets, "secrets")
        secret = encryption.secret_from(request.secrets) if spec.encrypted else None
        if request.mutable_parameters:
            raise InvalidArgument("mutable_parameters are not supported")
        requirement = request.accessibility_requirements
        if requirement.requisite and not any(self._is_local(t) for t in requirement.requisite):
            raise ResourceExhausted(
                f"volumes can only be provisioned on this node ({self._config.node_id})"
            )
        required = request.capacity_range.required_bytes
        limit = request.capacity_range.limit_bytes
        sizing.check_range(required, limit)
        label = _source_label(request)
        volume_id = volume_id_for_name(name)
        if self._store.is_quarantined(volume_id):
            raise FailedPrecondition("this name's state record is damaged; see the driver log")

        with self._locks.hold(volume_id):
            existing = self._volumes.existing_for_name(name)
            if existing is not None and existing.phase is Phase.READY:
                # A retry: answer from the volume, even if its source is gone by now.
                self._check_compatible(existing, spec, required, limit)
                if existing.content_source != label:
                    raise AlreadyExists("a volume with this name exists with another source")
                return csi_pb2.CreateVolumeResponse(volume=self._volume(existing))
            source = self._content_source(request) if label else None
            if source is not None:
                _check_source_matches(source.kind_of, spec)
                if limit and limit < source.size:
                    raise OutOfRange(
                        f"the source holds {source.size} bytes, above limit_bytes {limit}"
                    )
                required = max(required, source.size)
            size = sizing.choose_size(required, limit, spec, self._config)
            with contextlib.ExitStack() as stack:
                stack.enter_context(self._reserve(volume_id, size))
                if source is None:
                    record = self._volumes.create(name, spec, size, secret=secret)
                else:
                    if source.lock_key:
                        stack.enter_context(self._locks.hold(source.lock_key))
                    path, freeze = source.resolve()
                    record = self._volumes.create(
                        name, spec, size, source=path, freeze=freeze, content_source=label
                    )
        return csi_pb2.CreateVolumeResponse(volume=self._volume(record))

    def _content_source(self, request: csi_pb2.CreateVolumeRequest) -> ContentSource:
        content = request.volume_content_source
        which = content.WhichOneof("type")
        if which == "snapshot":
            snapshot_id = check_id(content.snapshot.snapshot_id, "snapshot_id")
            snapshot = self._ready_snapshot(snapshot_id)
            return ContentSource(
                label=f"snapshot:{snapshot_id}",
                kind_of=(snapshot.kind, snapshot.access_type, snapshot.fs_type, snapshot.encrypted),
                size=snapshot.size_bytes,
                lock_key=snapshot_id,
                resolve=lambda: (self._snapshots.content_path(snapshot), []),
            )
        if which == "volume":
            source_id = check_id(content.volume.volume_id, "source volume_id")
            volume = self._ready_record(source_id)

            def resolve() -> tuple[Path, list[str]]:
                current = self._ready_record(source_id)  # re-read under the source's lock
                path = self._volumes.backend(current).path(current)
                return path, self._snapshots.freeze_points(current)

            return ContentSource(
                label=f"volume:{source_id}",
                kind_of=(
                    volume.kind,
                    volume.access_type,
                    volume.fs_type,
                    is_encrypted(volume.parameters),
                ),
                size=volume.capacity_bytes,
                lock_key=source_id,
                resolve=resolve,
            )
        raise InvalidArgument("volume_content_source names neither a snapshot nor a volume")

    def _check_compatible(
        self, existing: VolumeRecord, spec: VolumeSpec, required: int, limit: int
    ) -> None:
        if existing.parameters != spec.parameters() or existing.access_type is not spec.access_type:
            raise AlreadyExists("a volume with this name exists with different parameters")
        if not sizing.fits(existing, required, limit):
            raise AlreadyExists(
                f"a volume with this name exists with capacity {existing.capacity_bytes} bytes"
            )

    @contextlib.contextmanager
    def _reserve(self, volume_id: str, size: int) -> Iterator[None]:
        """Check the node has room and hold it while the volume is made, so concurrent
        creates of other names cannot together pass the volume or space limits."""
        with self._reserving:
            pending = {i: s for i, s in self._reserved.items() if self._store.get(i) is None}
            limit = self._config.max_volumes_per_node
            if limit and self._store.count() + len(pending) >= limit:
                raise ResourceExhausted(f"this node already holds its maximum of {limit} volumes")
            free = sizing.available_capacity(self._config, self._store.all())
            free -= sum(pending.values())
            if size > free:
                raise ResourceExhausted(f"{size} bytes requested, only {free} bytes available")
            self._reserved[volume_id] = size
        try:
            yield
        finally:
            with self._reserving:
                self._reserved.pop(volume_id, None)

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
                published_node_ids=self._published_nodes(record),
                volume_condition=self._condition(record, host),
            )
            entries.append(
                csi_pb2.ListVolumesResponse.Entry(volume=self._volume(record), status=status)
            )
        return csi_pb2.ListVolumesResponse(entries=entries, next_token=next_token)

    def ControllerGetVolume(
        self, request: csi_pb2.ControllerGetVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerGetVolumeResponse:
        record = self._ready_record(check_id(request.volume_id))
        status = csi_pb2.ControllerGetVolumeResponse.VolumeStatus(
            published_node_ids=self._published_nodes(record),
            volume_condition=self._condition(record),
        )
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
            size = sizing.expansion_size(record, required, limit, self._config, self._store.all())
            record = self._volumes.expand(record, size)
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
        offered = [
            t for t in CAPABILITIES if t != RPC.EXPAND_VOLUME or self._config.controller_expansion
        ]
        return csi_pb2.ControllerGetCapabilitiesResponse(
            capabilities=[csi_pb2.ControllerServiceCapability(rpc=RPC(type=t)) for t in offered]
        )
