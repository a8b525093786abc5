"""CSI 1.13 health RPCs: ControllerGetVolumeHealth, ControllerListVolumeHealth (mixed into
ControllerService), NodeGetVolumeHealth and NodeGetStorageHealth (mixed into NodeService).

Each turns the findings of volumes/health.py and volumes/storage_health.py (rows of
volumes/conditions.py) into the wire's entries; a healthy volume has none.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

import grpc

from csi import paging
from csi.config import Config
from csi.errors import InvalidArgument
from csi.layout import Layout, check_id
from csi.pb import csi_pb2
from csi.state.records import Phase, VolumeRecord
from csi.state.store import StateStore
from csi.validation import check_host_path, check_map
from csi.volumes import health, storage_health
from csi.volumes.conditions import Condition, Problem, StorageStatus, VolumeStatus, found
from csi.volumes.manager import Volumes

Entry = csi_pb2.VolumeHealth.VolumeHealthEntry
Backend = csi_pb2.NodeGetStorageHealthResponse.StorageBackendHealth
VOLUME_STATUS = {
    VolumeStatus.DEGRADED: csi_pb2.DEGRADED,
    VolumeStatus.INACCESSIBLE: csi_pb2.INACCESSIBLE,
    VolumeStatus.DATA_LOSS: csi_pb2.DATA_LOSS,
}
STORAGE_STATUS = {
    StorageStatus.STORAGE_DEGRADED: csi_pb2.STORAGE_DEGRADED,
    StorageStatus.STORAGE_UNREACHABLE: csi_pb2.STORAGE_UNREACHABLE,
}


def volume_health(volume_id: str, conditions: Sequence[Condition]) -> csi_pb2.VolumeHealth:
    entries = []
    seen: set[tuple[VolumeStatus, str]] = set()
    for condition in conditions:
        row = condition.row
        if row is None or not isinstance(row.status, VolumeStatus):
            continue
        if (row.status, row.reason) in seen:
            continue  # the spec allows one entry per (status, reason)
        seen.add((row.status, row.reason))
        entries.append(
            Entry(status=VOLUME_STATUS[row.status], reason=row.reason, message=condition.message)
        )
    return csi_pb2.VolumeHealth(volume_id=volume_id, health_statuses=entries)


def storage_backends(conditions: Sequence[Condition]) -> list[Backend]:
    backends = []
    for condition in conditions:
        row = condition.row
        if row is None or not isinstance(row.status, StorageStatus):
            continue
        backends.append(
            Backend(status=STORAGE_STATUS[row.status], reason=row.reason, message=condition.message)
        )
    return backends


def findings(
    volumes: Volumes, record: VolumeRecord, view: health.HostView | None = None
) -> list[Condition]:
    """The volume's adverse conditions (none when healthy)."""
    condition = health.check(volumes, record, view)
    return [condition] if condition.abnormal else []


def at_paths(record: VolumeRecord, staging: str, publish: str) -> list[Condition]:
    """What the CO's own paths say: a path it staged or published the volume at, that the
    driver does not hold the volume at, means the workload cannot reach it there."""
    problems: list[Condition] = []
    if publish and posixpath.normpath(publish) not in record.targets:
        problems.append(found(Problem.TARGET_MOUNT_GONE, path=publish))
    recorded = record.staging_path
    if staging and not record.ephemeral and posixpath.normpath(staging) != recorded:
        problems.append(found(Problem.STAGING_MOUNT_GONE, path=staging))
    return problems


class ControllerHealthRpcs:
    _volumes: Volumes
    _store: StateStore

    def _ready_record(self, volume_id: str) -> VolumeRecord:
        raise NotImplementedError

    def ControllerGetVolumeHealth(
        self, request: csi_pb2.ControllerGetVolumeHealthRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerGetVolumeHealthResponse:
        if not request.volume_id:
            raise InvalidArgument("volume_id is required")
        record = self._ready_record(check_id(request.volume_id))
        check_map(request.secrets, "secrets")
        return csi_pb2.ControllerGetVolumeHealthResponse(
            volume_health=volume_health(record.volume_id, findings(self._volumes, record))
        )

    def ControllerListVolumeHealth(
        self, request: csi_pb2.ControllerListVolumeHealthRequest, context: grpc.ServicerContext
    ) -> csi_pb2.ControllerListVolumeHealthResponse:
        """Only volumes with a condition are listed (as the spec advises); pages are keyed on
        the last volume examined, like ListVolumes'."""
        paging.check_max_entries(request.max_entries)
        after = paging.start_after(request.starting_token)
        check_map(request.secrets, "secrets")
        view = health.HostView.read()  # one reading for the whole page
        entries: list[csi_pb2.VolumeHealth] = []
        next_token = ""
        for volume_id in (i for i in self._store.sorted_ids() if i > after):
            record = self._store.get(volume_id)
            if record is None or record.phase is not Phase.READY:
                continue
            problems = findings(self._volumes, record, view)
            if not problems:
                continue
            if request.max_entries and len(entries) == request.max_entries:
                next_token = paging.issue(entries[-1].volume_id)
                break
            entries.append(volume_health(volume_id, problems))
        return csi_pb2.ControllerListVolumeHealthResponse(entries=entries, next_token=next_token)


class NodeHealthRpcs:
    _config: Config
    _volumes: Volumes
    _layout: Layout

    def _record(self, volume_id: str) -> VolumeRecord:
        raise NotImplementedError

    def NodeGetVolumeHealth(
        self, request: csi_pb2.NodeGetVolumeHealthRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeGetVolumeHealthResponse:
        if not request.volume_id:
            raise InvalidArgument("volume_id is required")
        volume_id = check_id(request.volume_id)
        publish = staging = ""
        if request.volume_publish_path:
            publish = str(
                check_host_path(request.volume_publish_path, "volume_publish_path", self._layout)
            )
        if request.staging_target_path:
            staging = str(
                check_host_path(request.staging_target_path, "staging_target_path", self._layout)
            )
        record = self._record(volume_id)
        problems = findings(self._volumes, record)
        problems += at_paths(record, staging, publish)
        return csi_pb2.NodeGetVolumeHealthResponse(volume_health=volume_health(volume_id, problems))

    def NodeGetStorageHealth(
        self, request: csi_pb2.NodeGetStorageHealthRequest, context: grpc.ServicerContext
    ) -> csi_pb2.NodeGetStorageHealthResponse:
        check_map(request.secrets, "secrets")
        problems = storage_health.check(self._config.data_dir)
        return csi_pb2.NodeGetStorageHealthResponse(backend_health=storage_backends(problems))
