"""Volume lifecycles: each multi-step operation, with its record, done or rolled back.

The record is written before the host is changed (phase ``creating``/``deleting``, a
new target) and settled after, so after a crash the record always covers what may exist
on the host, and start-up reconciliation (csi.reconcile) can finish or undo the step.
Callers hold the volume's lock (csi.locks) around every call here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from csi.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from csi.faults import crash_point
from csi.host import fs, loopdev, mount
from csi.host.freeze import frozen
from csi.layout import Layout, volume_id_for_name
from csi.state.records import (
    AccessType,
    Phase,
    PublishedTarget,
    VolumeKind,
    VolumeRecord,
    VolumeSpec,
)
from csi.state.store import StateStore
from csi.validation import Capability
from csi.volumes import encryption, targets
from csi.volumes.directory import DirectoryVolumes
from csi.volumes.loop import LoopVolumes
from csi.volumes.params import check_mount_options_allowed


def _mount_group(value: str) -> int | None:
    """VOLUME_MOUNT_GROUP: the pod's fsGroup, a numeric group ID."""
    if not value:
        return None
    if not value.isdigit() or int(value) > 2**32 - 2:
        raise InvalidArgument("volume_mount_group must be a numeric group ID")
    return int(value)


class Volumes:
    def __init__(self, layout: Layout, store: StateStore) -> None:
        self.layout = layout
        self.store = store
        self.directories = DirectoryVolumes(layout)
        self.loops = LoopVolumes(layout)

    def backend(self, record: VolumeRecord) -> DirectoryVolumes | LoopVolumes:
        return self.directories if record.kind is VolumeKind.DIRECTORY else self.loops

    def _unaccounted_data(self, volume_id: str) -> bool:
        """Is there a finished image or directory under this ID with no record for it?"""
        layout = self.layout
        return layout.image_path(volume_id).exists() or layout.directory_path(volume_id).exists()

    # -- controller side -----------------------------------------------------------
    def existing_for_name(self, name: str, volume_id: str = "") -> VolumeRecord | None:
        """The volume called ``name`` (under ``volume_id`` if given), unless being deleted."""
        record = self.store.get(volume_id or volume_id_for_name(name))
        if record is None or record.phase is Phase.DELETING or record.name != name:
            return None
        return record

    def create(
        self,
        name: str,
        spec: VolumeSpec,
        capacity: int,
        *,
        source: Path | None = None,
        freeze: Sequence[str] = (),
        volume_id: str | None = None,
        content_source: str = "",
        ephemeral: bool = False,
        secret: bytes | None = None,
    ) -> VolumeRecord:
        """Create (or finish creating) the volume called ``name``.

        ``source`` is content to start from (a snapshot, or another volume's data, whose
        mount points ``freeze`` are frozen during the copy).
        """
        volume_id = volume_id or volume_id_for_name(name)
        record = self.store.get(volume_id)
        if record is not None and record.phase is Phase.DELETING:
            self.delete(record)
            record = None
        if record is None:
            if self._unaccounted_data(volume_id):
                raise FailedPrecondition(
                    "data that no record accounts for already exists for this name; "
                    "the driver neither adopts nor overwrites it (see the driver log)"
                )
            record = VolumeRecord(
                volume_id=volume_id,
                name=name,
                spec=spec,
                capacity_bytes=capacity,
                created_at=time.time(),
                content_source=content_source,
                ephemeral=ephemeral,
            )
            self.store.put(record)
            crash_point("create:record")
        if record.phase is Phase.READY:
            return record
        backend = self.backend(record)
        try:
            with frozen(freeze):
                backend.create(record, source, secret)
            crash_point("create:renamed")
            ready = record.with_changes(phase=Phase.READY)
            self.store.put(ready)
        except BaseException:
            # Nothing was returned to the caller, so nothing of this volume is kept.
            backend.delete(record)
            self.store.remove(volume_id)
            raise
        return ready

    def delete(self, record: VolumeRecord) -> None:
        if record.in_use and self._still_in_use(record):
            raise FailedPrecondition(
                "volume is staged or published on this node; unpublish it first"
            )
        if record.phase is not Phase.DELETING:
            record = record.with_changes(phase=Phase.DELETING, staging_path="", targets={})
            self.store.put(record)
            crash_point("delete:marked")
        self.backend(record).delete(record)
        crash_point("delete:removed")
        self.store.remove(record.volume_id)

    def _still_in_use(self, record: VolumeRecord) -> bool:
        staged_block = record.access_type is AccessType.BLOCK and record.staging_path
        if staged_block and self.loops.device(record) is not None:
            return True  # a staged block volume has no mount, only its loop device
        table = mount.read_mounts()
        paths = [record.staging_path, *record.targets]
        return any(p and mount.mounts_at(p, table) for p in paths)

    def capacity_on_disk(self, record: VolumeRecord) -> int:
        return self.backend(record).capacity_on_disk(record)

    def expand(self, record: VolumeRecord, size: int) -> VolumeRecord:
        """Grow the volume to ``size`` (never shrinks). The host grows first, then the record,
        so a retry after a crash finds the file already grown and only settles the record."""
        if size <= record.capacity_bytes:
            return record
        self.backend(record).expand(record, size)
        crash_point("expand:grown")
        grown = record.with_changes(capacity_bytes=size)
        self.store.put(grown)
        return grown

    def node_expand(self, record: VolumeRecord) -> int:
        """Grow what the node sees (the staged filesystem); returns the usable size."""
        if record.kind is VolumeKind.DIRECTORY:
            return record.capacity_bytes
        device = self.loops.device(record)
        if device is None:
            raise FailedPrecondition("volume is not staged on this node")
        loopdev.refresh_size(device)
        if record.access_type is AccessType.BLOCK:
            return loopdev.device_size(device)
        if not record.staging_path or not mount.is_mount_point(record.staging_path):
            raise FailedPrecondition("volume's filesystem is not mounted on this node")
        return self.loops.grow_filesystem(record, Path(record.staging_path))

    # -- node side -----------------------------------------------------------------
    def stage(
        self,
        record: VolumeRecord,
        staging: Path,
        cap: Capability,
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        check_mount_options_allowed(record.spec, cap.mount_flags)
        secret = encryption.secret_from(secrets or {}) if record.spec.encrypted else None
        elsewhere = record.staging_path and record.staging_path != str(staging)
        if elsewhere and (mount.is_mount_point(record.staging_path) or record.targets):
            raise FailedPrecondition(f"volume is already staged at {record.staging_path}")
        mode_changed = record.staged_read_only != cap.read_only
        if not elsewhere and mode_changed and self._staged_on_host(record, staging):
            raise AlreadyExists("volume is staged with a different access mode")
        if not staging.is_dir():
            raise FailedPrecondition(f"staging path {staging} is not an existing directory")
        before = record
        if record.staging_path != str(staging) or record.staged_read_only != cap.read_only:
            record = record.with_changes(staging_path=str(staging), staged_read_only=cap.read_only)
            self.store.put(record)
            crash_point("stage:record")
        try:
            self.backend(record).stage(
                record,
                staging,
                read_only=cap.read_only,
                flags=list(cap.mount_flags),
                secret=secret,
            )
        except BaseException:
            # The backend rolled the host back; the record follows, unless the host still
            # holds the volume there (then the record must keep covering it).
            if record is not before and not self._staged_on_host(record, staging):
                self.store.put(before)
            raise

    def _staged_on_host(self, record: VolumeRecord, staging: Path) -> bool:
        if record.access_type is AccessType.BLOCK:
            return self.loops.device(record) is not None
        return mount.is_mount_point(staging)

    def unstage(self, record: VolumeRecord, staging: Path) -> None:
        if record.staging_path != str(staging):
            return  # not staged there (or not at all): nothing of this volume to undo there
        live_targets = [t for t in record.targets if mount.is_mount_point(t)]
        if live_targets:
            raise FailedPrecondition("volume is still published; unpublish every target first")
        self.backend(record).unstage(record, staging)
        crash_point("unstage:detached")
        if record.staging_path or record.targets:
            self.store.put(record.with_changes(staging_path="", staged_read_only=False, targets={}))

    def publish(
        self,
        record: VolumeRecord,
        staging: Path,
        target: Path,
        cap: Capability,
        read_only: bool,
    ) -> None:
        check_mount_options_allowed(record.spec, cap.mount_flags)
        group = _mount_group(cap.mount_group)
        read_only = read_only or cap.read_only
        wanted = PublishedTarget(read_only=read_only, exclusive=cap.exclusive)
        key = str(target)
        current = record.targets.get(key)
        table = mount.read_mounts()  # one reading for every target of the volume
        if current is not None and current != wanted and mount.mounts_at(target, table):
            raise AlreadyExists("target is already published with different options")
        others = [p for p in record.targets if p != key and mount.mounts_at(p, table)]
        if others and (wanted.exclusive or any(record.targets[p].exclusive for p in others)):
            raise FailedPrecondition("volume is published for a single writer elsewhere")
        if record.staging_path != str(staging):
            raise FailedPrecondition(f"volume is not staged at {staging}")
        before = record
        if current != wanted:
            record = record.with_changes(targets={**record.targets, key: wanted})
            self.store.put(record)
            crash_point("publish:record")
        try:
            if record.access_type is AccessType.BLOCK:
                self._publish_block(record, target, read_only)
            else:
                flags = list(cap.mount_flags)
                source = encryption.data_dir(staging) if record.spec.encrypted else None
                targets.publish_mount(
                    staging, target, read_only=read_only, flags=flags, source=source
                )
                if group is not None and not read_only:
                    targets.give_to_group(target, group)
        except BaseException:
            if record is not before and not mount.is_mount_point(target):
                self.store.put(before)
            raise
        crash_point("publish:mounted")

    def _publish_block(self, record: VolumeRecord, target: Path, read_only: bool) -> None:
        staged = self.loops.device(record)
        if not read_only or staged is None or mount.is_mount_point(target):
            targets.publish_block(staged, target, read_only=read_only)
            return
        device = self.loops.attach_read_only(record)
        try:
            targets.publish_block(device, target, read_only=True)
        except BaseException:
            self.loops.release_read_only(record, device)
            raise

    def unpublish(self, record: VolumeRecord, target: Path) -> None:
        if str(target) not in record.targets:
            return  # never published there (or already undone): the path is not ours to touch
        bound = targets.bound_device(target) if record.access_type is AccessType.BLOCK else None
        targets.unpublish(target)
        crash_point("unpublish:unmounted")
        if bound is not None and loopdev.is_read_only(bound):
            self.loops.release_read_only(record, bound)
        if str(target) in record.targets:
            remaining = {p: t for p, t in record.targets.items() if p != str(target)}
            self.store.put(record.with_changes(targets=remaining))

    def usage_path_known(self, record: VolumeRecord, path: Path) -> bool:
        return str(path) in record.targets or str(path) == record.staging_path

    def usage(self, record: VolumeRecord, path: Path) -> fs.Usage | int:
        """Filesystem usage at ``path``, or the device size in bytes for block volumes."""
        if not path.exists():
            raise NotFound(f"volume path {path} does not exist")
        if record.access_type is AccessType.BLOCK:
            return self.loops.capacity_on_disk(record)
        return fs.usage(path)
