"""CSI ephemeral inline volumes: made when a pod's volume is published, gone at unpublish.

The pod spec's volume attributes arrive as volume_context: ``volumeType``, ``fsType`` and
``size`` (e.g. ``size: 1Gi``; default: the driver's default size). The volume is staged at a
private path under the data root and bind-mounted to the pod's target like any other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

from csi.errors import InvalidArgument
from csi.host import files
from csi.state.records import VolumeRecord
from csi.units import parse_size
from csi.validation import Capability
from csi.volumes.manager import Volumes
from csi.volumes.params import RESERVED_PREFIX, parse_spec
from csi.volumes.provisioning import NewVolume, Provisioner

SIZE_KEY = "size"


class EphemeralVolumes:
    def __init__(self, volumes: Volumes, provisioner: Provisioner) -> None:
        self._volumes = volumes
        self._provisioner = provisioner

    def staging_path(self, volume_id: str) -> Path:
        return self._volumes.layout.ephemeral_staging(volume_id)

    def publish(
        self,
        volume_id: str,
        target: Path,
        cap: Capability,
        read_only: bool,
        context: Mapping[str, str],
    ) -> None:
        attributes = {k: v for k, v in context.items() if not k.startswith(RESERVED_PREFIX)}
        size_text = attributes.pop(SIZE_KEY, "")
        try:
            requested = parse_size(size_text) if size_text else 0
        except ValueError as exc:
            raise InvalidArgument(f"volume attribute size: {exc}") from None
        spec = parse_spec(attributes, [cap.access_type], [cap.fs_type])
        if spec.encrypted:
            raise InvalidArgument("inline volumes cannot be encrypted: use a PVC with a Secret")
        store = self._volumes.store
        created = store.get(volume_id) is None
        record = self._provisioner.create(
            NewVolume(
                f"ephemeral/{volume_id}",
                spec,
                required=requested,
                volume_id=volume_id,
                ephemeral=True,
            )
        )
        staging = self.staging_path(volume_id)
        try:
            files.make_dir(staging, parents=True)
            self._volumes.stage(record, staging, cap)
            self._volumes.publish(store.get(volume_id) or record, staging, target, cap, read_only)
        except BaseException:
            if created:
                with contextlib.suppress(Exception):
                    self._remove(volume_id, target)
            raise

    def unpublish(self, record: VolumeRecord, target: Path) -> None:
        self._volumes.unpublish(record, target)
        self._remove(record.volume_id, target)

    def _remove(self, volume_id: str, target: Path) -> None:
        store = self._volumes.store
        record = store.get(volume_id)
        if record is None:
            return
        if str(target) in record.targets:
            self._volumes.unpublish(record, target)
            record = store.get(volume_id) or record
        if record.targets:
            return  # still published elsewhere: keep it
        staging = self.staging_path(volume_id)
        self._volumes.unstage(record, staging)
        files.remove_dir(staging)
        current = store.get(volume_id)
        if current is not None:
            self._volumes.delete(current)
