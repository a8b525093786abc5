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

from csi.config import QuotaMode
from csi.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from csi.faults import crash_point
from csi.host import files, fs, mount
from csi.host.freeze import frozen
from csi.layout import Layout, volume_id_for_name
from csi.state.records import Phase, PublishedTarget, VolumeRecord, VolumeSpec
from csi.state.store import StateStore
from csi.validation import Capability
from csi.volumes import encryption, targets
from csi.volumes.backend import Backend, Kinded, KindFacts, facts_for
from csi.volumes.directory import DirectoryBackend
from csi.volumes.ledger import SpaceLedger
from csi.volumes.loop import LoopFilesystemBackend
from csi.volumes.loop_block import LoopBlockBackend
from csi.volumes.loop_image import LoopImages
from csi.volumes.params import check_mount_options_allowed
from csi.volumes.quotas import DirectoryQuotas


def _mount_group(value: str) -> int | None:
    """VOLUME_MOUNT_GROUP: the pod's fsGroup, a numeric group ID."""
    if not value:
        return None
    if not value.isdigit() or int(value) > 2**32 - 2:
        raise InvalidArgument("volume_mount_group must be a numeric group ID")
    return int(value)


class Volumes:
    def __init__(
        self, layout: Layout, store: StateStore, quota_mode: QuotaMode = QuotaMode.ENFORCE
    ) -> None:
        self.layout = layout
        self.store = store
        self.ledger = SpaceLedger(layout)  # what the volumes provision and promise
        store.watch(self.ledger)
        self.quotas = DirectoryQuotas(layout.root, quota_mode)
        images = LoopImages(layout)  # one per data root: it serialises loop attaches
        backends: list[Backend] = [
            DirectoryBackend(layout, self.quotas),
            LoopFilesystemBackend(images),
            LoopBlockBackend(images),
        ]
        self._backends: dict[KindFacts, Backend] = {b.facts: b for b in backends}

    def backend(self, of: Kinded) -> Backend:
        """The backend of a volume (or spec, or snapshot record) of this kind."""
        return self._backends[facts_for(of)]

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
            project = self.backend(spec).project_for_new_volume()
            record = VolumeRecord(
                volume_id=volume_id,
                name=name,
                spec=spec,
                capacity_bytes=capacity,
                created_at=time.time(),
                content_source=content_source,
                ephemeral=ephemeral,
                project_id=project,
            )
            try:
                self.store.put(record)
            except BaseException:
                self.quotas.forget(project)
                raise
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
            self.forget(record)
            raise
        return ready

    def forget(self, record: VolumeRecord) -> None:
        """The record of a volume whose data is gone goes; then its project ID may serve
        another volume."""
        self.store.remove(record.volume_id)
        self.quotas.forget(record.project_id)

    def delete(self, record: VolumeRecord) -> None:
        if record.in_use and self.backend(record).still_in_use(record):
            raise FailedPrecondition(
                "volume is staged or published on this node; unpublish it first"
            )
        if record.phase is not Phase.DELETING:
            # Stale node use (nothing holds it any more) goes first, without waiting for
            # the disk; the store writes nothing when there is none.
            record = record.with_changes(staging_path="", staged_read_only=False, targets={})
            self.store.put(record)
            crash_point("delete:unused")
            record = record.with_changes(phase=Phase.DELETING)
            self.store.put(record)  # durable: the decision to delete outlives a power loss
            crash_point("delete:marked")
        self.backend(record).delete(record)
        crash_point("delete:removed")
        self.forget(record)

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
        return self.backend(record).node_expand(record)

    # -- node side -----------------------------------------------------------------
    def stage(
        self,
        record: VolumeRecord,
        staging: Path,
        cap: Capability,
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        check_mount_options_allowed(record.spec, cap.mount_flags)
        secret = (
            encryption.secret_from(secrets or {}, encryption.SecretUse.STAGE)
            if record.spec.encrypted
            else None
        )
        elsewhere = record.staging_path and record.staging_path != str(staging)
        # Paths a reboot (or a power loss that kept an older record) unmounted hold nothing.
        if elsewhere and targets.mounted_anywhere(record):
            raise FailedPrecondition(f"volume is already staged at {record.staging_path}")
        mode_changed = record.staged_read_only != cap.read_only
        backend = self.backend(record)
        if not elsewhere and mode_changed and backend.staged_on_host(record, staging):
            raise AlreadyExists("volume is staged with a different access mode")
        if not staging.is_dir():
            raise FailedPrecondition(f"staging path {staging} is not an existing directory")
        if record.staging_path != str(staging):
            # Not a retry (the record is written before the host is touched): whatever is
            # mounted there is someone else's, and unstaging would unmount it too; files
            # there would be hidden by the volume's mount.
            if mount.is_mount_point(staging):
                raise FailedPrecondition(
                    f"staging path {staging} already has something else mounted on it; "
                    "stage onto an empty directory"
                )
            if not files.is_empty_dir(staging):
                raise FailedPrecondition(
                    f"staging path {staging} is not empty: the volume's mount would hide "
                    "what is there; stage onto an empty directory"
                )
        before = record
        if record.staging_path != str(staging) or record.staged_read_only != cap.read_only:
            record = record.with_changes(staging_path=str(staging), staged_read_only=cap.read_only)
            self.store.put(record)
            crash_point("stage:record")
        try:
            backend.stage(
                record,
                staging,
                read_only=cap.read_only,
                flags=list(cap.mount_flags),
                secret=secret,
            )
        except BaseException:
            # The backend rolled the host back; the record follows, unless the host still
            # holds the volume there (then the record must keep covering it).
            if record is not before and not backend.staged_on_host(before, staging):
                self.store.put(before)
            raise

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
        table = mount.read_mounts_naming(key, *record.targets)  # one reading for every target
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
            self.backend(record).publish(
                record,
                staging,
                target,
                read_only=read_only,
                flags=list(cap.mount_flags),
                group=group,
            )
        except BaseException:
            if record is not before and not mount.is_mount_point(target):
                self.store.put(before)
            raise
        crash_point("publish:mounted")

    def unpublish(self, record: VolumeRecord, target: Path) -> None:
        if str(target) not in record.targets:
            return  # never published there (or already undone): the path is not ours to touch
        self.backend(record).unpublish(record, target)  # crash point unpublish:unmounted
        if str(target) in record.targets:
            remaining = {p: t for p, t in record.targets.items() if p != str(target)}
            self.store.put(record.with_changes(targets=remaining))

    def usage_path_known(self, record: VolumeRecord, path: Path) -> bool:
        return str(path) in record.targets or str(path) == record.staging_path

    def usage(self, record: VolumeRecord, path: Path) -> fs.Usage | int:
        """Filesystem usage at ``path``, or the device size in bytes for block volumes."""
        if not path.exists():
            raise NotFound(f"volume path {path} does not exist")
        return self.backend(record).usage(record, path)
