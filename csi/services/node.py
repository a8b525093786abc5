"""CSI Node: stage, publish and measure volumes on this node."""

from __future__ import annotations

import posixpath
from pathlib import Path

import grpc

from csi.config import Config
from csi.errors import InvalidArgument, NotFound
from csi.host.fs import Usage
from csi.layout import Layout, check_id
from csi.locks import KeyedLocks
from csi.pb import csi_pb2, csi_pb2_grpc
from csi.services import legacy_condition
from csi.services.health_rpcs import NodeHealthRpcs
from csi.state.records import VolumeRecord
from csi.validation import (
    Capability,
    check_host_path,
    check_volume_path,
    mismatch,
    parse_capability,
    required_capability,
)
from csi.volumes import health
from csi.volumes.ephemeral import EphemeralVolumes
from csi.volumes.manager import Volumes
from csi.volumes.provisioning import Provisioner

RPC = csi_pb2.NodeServiceCapability.RPC
CAPABILITIES = (
    RPC.STAGE_UNSTAGE_VOLUME,
    RPC.GET_VOLUME_STATS,
    RPC.SINGLE_NODE_MULTI_WRITER,
    RPC.EXPAND_VOLUME,
    RPC.VOLUME_MOUNT_GROUP,
    RPC.GET_VOLUME_HEALTH,
    RPC.GET_STORAGE_HEALTH,
)
EPHEMERAL_KEY = "csi.storage.k8s.io/ephemeral"
Unit = csi_pb2.VolumeUsage.Unit


class NodeService(NodeHealthRpcs, csi_pb2_grpc.NodeServicer):
    def __init__(
        self, config: Config, volumes: Volumes, provisioner: Provisioner, locks: KeyedLocks
    ) -> None:
        self._config = config
        self._volumes = volumes
        self._provisioner = provisioner
        self._ephemeral = EphemeralVolumes(volumes, provisioner)
        self._store = volumes.store
        self._locks = locks
        self._layout: Layout = volumes.layout

    def _record(self, volume_id: str) -> VolumeRecord:
        return self._store.require_ready(volume_id)

    @staticmethod
    def _check_access(record: VolumeRecord, cap: Capability) -> None:
        reason = mismatch(cap, record.access_type, record.fs_type)
        if reason is not None:
            raise InvalidArgument(reason)

    def NodeStageVolume(
        self, request: csi_pb2.NodeStageVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeStageVolumeResponse:
        volume_id = check_id(request.volume_id)
        staging = check_host_path(request.staging_target_path, "staging_target_path", self._layout)
        cap = required_capability(request.HasField("volume_capability"), request.volume_capability)
        with self._locks.hold(volume_id):
            record = self._record(volume_id)
            self._check_access(record, cap)
            self._volumes.stage(record, staging, cap, request.secrets)
        return csi_pb2.NodeStageVolumeResponse()

    def NodeUnstageVolume(
        self, request: csi_pb2.NodeUnstageVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeUnstageVolumeResponse:
        volume_id = check_id(request.volume_id)
        staging = check_host_path(request.staging_target_path, "staging_target_path", self._layout)
        with self._locks.hold(volume_id):
            record = self._record(volume_id)
            self._volumes.unstage(record, staging)
        return csi_pb2.NodeUnstageVolumeResponse()

    def NodePublishVolume(
        self, request: csi_pb2.NodePublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodePublishVolumeResponse:
        volume_id = check_id(request.volume_id)
        target = check_host_path(request.target_path, "target_path", self._layout)
        cap = required_capability(request.HasField("volume_capability"), request.volume_capability)
        if request.volume_context.get(EPHEMERAL_KEY) == "true":
            with self._locks.hold(volume_id):
                self._ephemeral.publish(
                    volume_id, target, cap, request.readonly, dict(request.volume_context)
                )
            return csi_pb2.NodePublishVolumeResponse()
        staging = check_host_path(request.staging_target_path, "staging_target_path", self._layout)
        if staging == target:
            raise InvalidArgument("target_path must differ from staging_target_path")
        with self._locks.hold(volume_id):
            record = self._record(volume_id)
            self._check_access(record, cap)
            self._volumes.publish(record, staging, target, cap, request.readonly)
        return csi_pb2.NodePublishVolumeResponse()

    def NodeUnpublishVolume(
        self, request: csi_pb2.NodeUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeUnpublishVolumeResponse:
        volume_id = check_id(request.volume_id)
        target = check_host_path(request.target_path, "target_path", self._layout)
        with self._locks.hold(volume_id):
            record = self._record(volume_id)
            if record.ephemeral:
                self._ephemeral.unpublish(record, target)
            else:
                self._volumes.unpublish(record, target)
        return csi_pb2.NodeUnpublishVolumeResponse()

    def NodeGetVolumeStats(
        self, request: csi_pb2.NodeGetVolumeStatsRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeGetVolumeStatsResponse:
        volume_id = check_id(request.volume_id)
        check_volume_path(request.volume_path)
        record = self._record(volume_id)
        path = Path(posixpath.normpath(request.volume_path))
        if not path.is_absolute() or not self._volumes.usage_path_known(record, path):
            raise NotFound(
                f"volume {volume_id} is not published or staged at {request.volume_path}"
            )
        usage = self._volumes.usage(record, path)
        if isinstance(usage, Usage):
            entries = [
                csi_pb2.VolumeUsage(
                    unit=Unit.BYTES,
                    total=usage.total_bytes,
                    available=usage.available_bytes,
                    used=usage.used_bytes,
                ),
                csi_pb2.VolumeUsage(
                    unit=Unit.INODES,
                    total=usage.total_inodes,
                    available=usage.free_inodes,
                    used=usage.used_inodes,
                ),
            ]
        else:
            entries = [csi_pb2.VolumeUsage(unit=Unit.BYTES, total=usage)]
        response = csi_pb2.NodeGetVolumeStatsResponse(usage=entries)
        if self._config.legacy_volume_condition:
            legacy_condition.attach(response, health.check(self._volumes, record))
        return response

    def NodeExpandVolume(
        self, request: csi_pb2.NodeExpandVolumeRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeExpandVolumeResponse:
        volume_id = check_id(request.volume_id)
        check_volume_path(request.volume_path)
        with self._locks.hold(volume_id):
            record = self._record(volume_id)
            path = Path(posixpath.normpath(request.volume_path))
            if not path.is_absolute() or not self._volumes.usage_path_known(record, path):
                raise NotFound(f"volume {volume_id} is not published or staged at {path}")
            if request.HasField("volume_capability"):
                self._check_access(record, parse_capability(request.volume_capability))
            # Without controller expansion (Kubernetes' resizer cannot run per node), the
            # node grows the image itself before growing what is mounted.
            required = request.capacity_range.required_bytes
            if required > record.capacity_bytes:
                record = self._provisioner.grow(
                    record, required, request.capacity_range.limit_bytes
                )
            capacity = self._volumes.node_expand(record)
        return csi_pb2.NodeExpandVolumeResponse(capacity_bytes=capacity)

    def NodeGetCapabilities(
        self, request: csi_pb2.NodeGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeGetCapabilitiesResponse:
        offered = list(CAPABILITIES)
        if self._config.legacy_volume_condition:
            offered.append(legacy_condition.NODE_CAPABILITY)  # type: ignore[arg-type]
        return csi_pb2.NodeGetCapabilitiesResponse(
            capabilities=[csi_pb2.NodeServiceCapability(rpc=RPC(type=t)) for t in offered]
        )

    def NodeGetInfo(
        self, request: csi_pb2.NodeGetInfoRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeGetInfoResponse:
        return csi_pb2.NodeGetInfoResponse(
            node_id=self._config.node_id,
            max_volumes_per_node=self._config.max_volumes_per_node,
            accessible_topology=csi_pb2.Topology(
                segments={self._config.topology_key: self._config.node_id}
            ),
        )
