"""Start-up reconciliation: make the records and the host agree before serving.

Runs once, before Probe reports ready. It finishes or rolls back operations a crash
interrupted, thaws filesystems a crashed snapshot left frozen, reports mounts a reboot
removed (kept in the records until the orchestrator stages and publishes again, or
unpublishes), and detaches loop devices of ours that nothing uses. It never deletes a
volume's data that no record accounts for: such files are reported and left alone.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from csi.host import freeze, loopdev, mount
from csi.host.errors import IoctlFailed
from csi.layout import DELETING_SUFFIX, IMAGE_SUFFIX, PARTIAL_SUFFIX, Layout, is_valid_id
from csi.state.records import Phase, VolumeRecord
from csi.state.reserve import TeardownReserve
from csi.state.store import RecordStore
from csi.tighten import tighten
from csi.volumes.backend import facts_for
from csi.volumes.groups import GroupSnapshots
from csi.volumes.manager import Volumes
from csi.volumes.snapshots import Snapshots

log = logging.getLogger(__name__)


@dataclass
class Report:
    volumes: int = 0
    rolled_back: list[str] = field(default_factory=list)
    stale_mounts: int = 0
    detached: list[str] = field(default_factory=list)
    unaccounted: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    thawed: int = 0
    failed: list[str] = field(default_factory=list)
    narrowed: list[str] = field(default_factory=list)


def reconcile(
    volumes: Volumes, snapshots: Snapshots | None = None, groups: GroupSnapshots | None = None
) -> Report:
    report = Report()
    layout = volumes.layout
    store = volumes.store
    stores: list[RecordStore[Any]] = [store]
    stores += [snapshots.store] if snapshots is not None else []
    stores += [groups.store] if groups is not None else []
    for each in stores:
        for damaged in each.load():
            report.damaged.append(str(damaged.path))
            log.error(
                "event=damaged_record path=%s reason=%s action=left_in_place_and_quarantined",
                damaged.path,
                damaged.reason,
            )
    # Whether directory volumes can be held to their size here, told once; the project IDs
    # the records name are taken.
    volumes.quotas.detect(r.project_id for r in store.all() if r.project_id is not None)
    table = mount.read_mounts()  # one reading; nothing below mounts anything
    # First thaw what a crashed snapshot froze: pods' I/O hangs until then.
    for record in store.all():
        if record.phase is Phase.READY and record.in_use:
            report.thawed += _thaw(record)
            report.stale_mounts += _stale_mounts(record, table)
    # A creation's private mount and scratch loop device go before its volume is undone
    # (which removes the scratch image they name).
    _attempt(report, None, "_undo_setup_mounts", _undo_setup_mounts, layout)
    # Then finish or undo each interrupted operation on its own: one that fails is logged and
    # its record quarantined; it does not keep the node from serving every other volume.
    if groups is not None:
        for group in groups.store.all():
            if group.phase is not Phase.READY:  # never answered (creating) or going (deleting)
                _attempt(report, groups.store, group.group_snapshot_id, groups.delete, group)
    if snapshots is not None:
        for snapshot in snapshots.store.all():
            if snapshot.phase is not Phase.READY:
                _attempt(report, snapshots.store, snapshot.snapshot_id, snapshots.delete, snapshot)
    for record in store.all():
        if record.phase is not Phase.READY:
            _attempt(report, store, record.volume_id, _undo_volume, volumes, record)
    for step in (_remove_scratch, _keep_teardown_reserve):
        _attempt(report, None, step.__name__, step, layout)
    _attempt(report, None, "tighten", _tighten, report, layout)
    try:
        report.detached = _detach_unused_loops(volumes)
    except Exception as exc:
        log.error("event=reconcile_step_failed step=detach_unused error=%s", exc)
    known = {r.volume_id for r in store.all()} | set(store.too_new())
    report.unaccounted = _unaccounted(layout, known)
    for path in report.unaccounted:
        log.warning("event=unaccounted_data path=%s action=left_in_place", path)
    report.volumes = store.count()
    log.info(
        "event=reconciled volumes=%d settled=%d stale_mounts=%d "
        "detached=%d unaccounted=%d damaged=%d thawed=%d failed=%d",
        report.volumes,
        len(report.rolled_back),
        report.stale_mounts,
        len(report.detached),
        len(report.unaccounted),
        len(report.damaged),
        report.thawed,
        len(report.failed),
    )
    return report


def _keep_teardown_reserve(layout: Layout) -> None:
    """The room kept for teardown, made again if a full disk took it (csi.state.reserve)."""
    if not TeardownReserve(layout.teardown_reserve).ensure():
        log.warning(
            "event=teardown_reserve_missing reason=data_root_full "
            "action=new_volumes_refused_until_there_is_room"
        )


def _tighten(report: Report, layout: Layout) -> None:
    """Files an older driver left readable by others (csi.tighten)."""
    report.narrowed = [str(p) for p in tighten(layout)]
    for path in report.narrowed:
        log.warning("event=narrowed_mode path=%s reason=readable_by_other_users", path)


def _undo_volume(volumes: Volumes, record: VolumeRecord) -> None:
    """Roll back a create never answered, or finish a delete already decided."""
    volumes.backend(record).delete(record)
    volumes.forget(record)


def _attempt(
    report: Report,
    store: RecordStore[Any] | None,
    what: str,
    step: Callable[..., object],
    *args: Any,
) -> None:
    try:
        step(*args)
    except Exception as exc:
        report.failed.append(what)
        log.error(
            "event=reconcile_step_failed subject=%s error=%s: %s action=quarantined",
            what,
            type(exc).__name__,
            exc,
        )
        if store is not None:
            store.quarantine(what)
        return
    if store is not None:
        report.rolled_back.append(what)


def _stale_mounts(record: VolumeRecord, table: list[mount.MountEntry]) -> int:
    """Staging paths and targets the record names but the host no longer mounts (a reboot).

    They stay in the record: the orchestrator either stages and publishes again (the driver
    mounts them again) or unpublishes and unstages (the driver removes what it made).
    """
    paths = [*record.targets, record.staging_path] if record.staging_path else [*record.targets]
    if not facts_for(record).staging_mount and record.staging_path:
        paths.remove(record.staging_path)  # a block or directory stage mounts nothing
    return sum(1 for p in paths if not mount.mounts_at(p, table))


def _thaw(record: VolumeRecord) -> int:
    """A crash during a snapshot copy leaves the source filesystem frozen: thaw it."""
    staging = record.staging_path
    if not facts_for(record).staging_mount or not staging or not mount.is_mount_point(staging):
        return 0
    try:
        thawed = freeze.thaw(staging)
    except OSError as exc:  # its open
        log.warning("event=thaw_failed path=%s error=%s", staging, exc.strerror)
        return 0
    except IoctlFailed as failed:
        log.warning("event=thaw_failed path=%s error=%s", staging, failed.message)
        return 0
    if thawed:
        log.warning("event=thawed path=%s reason=frozen_by_an_interrupted_snapshot", staging)
    return int(thawed)


def _undo_setup_mounts(layout: Layout) -> None:
    """A crash while CreateVolume prepared a new filesystem leaves its private mount and the
    loop device of the scratch image (both go before the scratch image does); a crash while
    a directory volume was published leaves its scratch bind (csi.volumes.targets)."""
    if layout.setup_dir.is_dir():
        for entry in os.scandir(layout.setup_dir):
            mount.unmount(entry.path)
            os.rmdir(entry.path)
    partials = [e.path for e in os.scandir(layout.images_dir) if e.name.endswith(PARTIAL_SUFFIX)]
    if not partials:
        return
    table = loopdev.LoopTable.read()
    for partial in partials:
        for device in table.devices_of(partial, read_only=None):
            loopdev.detach(device)


def _remove_scratch(layout: Layout) -> None:
    """Scratch names hold half-built or half-deleted artefacts that never held user data."""
    for directory in (layout.images_dir, layout.volumes_dir, layout.snapshots_dir):
        for entry in os.scandir(directory):
            if entry.name.endswith((PARTIAL_SUFFIX, DELETING_SUFFIX)):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)


def _detach_unused_loops(volumes: Volumes) -> list[str]:
    """Detach the loop devices of recorded images that nothing uses, found by the image's
    identity (a device attached by an earlier driver shows its image under another name).
    Devices of files no record accounts for are not ours to judge: they stay attached."""
    layout = volumes.layout
    loops = loopdev.LoopTable.read()
    shown = loops.file_names()  # few, where a node holds thousands of idle volumes
    images = [
        layout.image_path(r.volume_id)
        for r in volumes.store.all()
        if layout.image_name(r.volume_id) in shown
        and facts_for(r).loop_device
        and not (facts_for(r).staged_by_device and r.staging_path)  # its device is its use
    ]
    if not images:
        return []
    table = mount.read_mounts()
    detached: list[str] = []
    for image in images:
        for device in loops.devices_of(image, read_only=None):
            if not mount.mounts_of_device(device, table):
                loopdev.detach(device)
                detached.append(device)
    return detached


def _unaccounted(layout: Layout, known: set[str]) -> list[str]:
    found: list[str] = []
    for entry in os.scandir(layout.images_dir):
        stem = entry.name.removesuffix(IMAGE_SUFFIX)
        if stem not in known or not is_valid_id(stem):
            found.append(entry.path)
    for entry in os.scandir(layout.volumes_dir):
        if entry.name not in known:
            found.append(entry.path)
    return sorted(found)
