"""``localvol-csi inspect``: what the driver holds on this node, read from its data dir.

Safe beside a running driver and without one, because it only reads: record files are
opened read-only and upgraded in memory (the store's ``load`` would write upgraded records
back and remove interrupted temp files, so it is never called), nothing is created,
renamed or removed, and no lock is taken (the driver's locks live in its own memory and
its writes are atomic renames, so every file read here is a whole record, old or new).

For each volume: kind, size, phase, where it is staged and published, its loop devices and
its health (the same check NodeGetVolumeStats and ListVolumes use); for each snapshot and
group snapshot: kind, size, phase and source; every record the driver would refuse
(unreadable, or written by a newer driver) with the reason; and every file or directory
under the data root that no record accounts for, with the scratch names of interrupted
creates and deletes listed apart (the driver removes those at its next start).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from csi.host import fs, loopdev, quota
from csi.host.errors import HostError, LoopDeviceUnreadable
from csi.layout import DELETING_SUFFIX, IMAGE_SUFFIX, PARTIAL_SUFFIX, Layout, is_valid_id
from csi.state import migrations
from csi.state.migrations import RecordTooNew
from csi.state.records import GroupSnapshotRecord, Phase, SnapshotRecord, VolumeRecord
from csi.state.store import StateStore, with_node_use
from csi.volumes import health
from csi.volumes.backend import DIRECTORY, facts_for
from csi.volumes.manager import Volumes

SCRATCH_SUFFIXES = (PARTIAL_SUFFIX, DELETING_SUFFIX)
R = TypeVar("R")


class InspectError(Exception):
    """The data dir cannot be inspected (missing, not a directory, unreadable)."""


@dataclass(frozen=True)
class Target:
    path: str
    read_only: bool


@dataclass(frozen=True)
class VolumeView:
    volume_id: str
    name: str
    kind: str
    fs_type: str
    size_bytes: int
    phase: str
    staging_path: str
    targets: list[Target]
    loop_devices: list[str]
    healthy: bool
    health: str
    ephemeral: bool
    content_source: str
    encrypted: bool
    project_id: int | None  # the project quota holding a directory volume to its size


@dataclass(frozen=True)
class SnapshotView:
    snapshot_id: str
    name: str
    kind: str
    size_bytes: int
    phase: str
    source_volume_id: str
    group_snapshot_id: str


@dataclass(frozen=True)
class GroupView:
    group_snapshot_id: str
    name: str
    phase: str
    snapshot_ids: list[str]


@dataclass(frozen=True)
class Refused:
    """A record the driver will not act on."""

    store: str  # volume, snapshot, group
    path: str
    reason: str


@dataclass
class NodeView:
    data_dir: str
    free_bytes: int | None = None
    size_bytes: int | None = None
    # Whether the data root's filesystem holds projects to their limits, and if not why.
    directory_quota: str = ""
    volumes: list[VolumeView] = field(default_factory=list)
    snapshots: list[SnapshotView] = field(default_factory=list)
    groups: list[GroupView] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    unaccounted: list[str] = field(default_factory=list)
    scratch: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- reading records ------------------------------------------------------------------
def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        return sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return []


def read_records(
    directory: Path,
    store: str,
    decode: Callable[[dict[str, Any]], R],
    steps: Mapping[int, migrations.Step],
    refused: list[Refused],
    overlay: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, R]:
    """ID -> record, as the store would load them, without writing anything; the records
    it would refuse go to ``refused``. Interrupted writes (``*.tmp``) are not records."""
    found: dict[str, R] = {}
    for entry in _entries(directory):
        if entry.name.endswith(".tmp"):
            continue
        stem, ext = os.path.splitext(entry.name)
        if ext != ".json" or not is_valid_id(stem):
            refused.append(Refused(store, entry.path, "unexpected file name"))
            continue
        try:
            with open(entry.path, encoding="utf-8") as fh:
                data, _ = migrations.upgrade(json.load(fh), steps)
            record = decode(overlay(stem, data) if overlay is not None else data)
        except RecordTooNew as exc:
            refused.append(Refused(store, entry.path, str(exc)))
            continue
        except Exception as exc:
            refused.append(Refused(store, entry.path, f"unreadable: {type(exc).__name__}"))
            continue
        if getattr(record, "record_id", None) != stem:
            refused.append(Refused(store, entry.path, "ID does not match file name"))
            continue
        found[stem] = record
    return found


# -- views ----------------------------------------------------------------------------
def _volume_view(
    volumes: Volumes, record: VolumeRecord, host: health.HostView, loops: loopdev.LoopTable
) -> VolumeView:
    facts = facts_for(record)
    devices: list[str] = []
    if record.phase is not Phase.READY:
        healthy, condition = False, f"interrupted while {record.phase.value}: the driver "
        condition += "finishes or undoes it when it starts"
    else:
        result = health.check(volumes, record, host)
        healthy, condition = not result.abnormal, result.message
    if facts.loop_device:
        try:
            devices = loops.devices_of(volumes.layout.image_path(record.volume_id), read_only=None)
        except LoopDeviceUnreadable as exc:
            healthy, condition = False, exc.message
    return VolumeView(
        volume_id=record.volume_id,
        name=record.name,
        kind=facts.name,
        fs_type=record.fs_type,
        size_bytes=record.capacity_bytes,
        phase=record.phase.value,
        staging_path=record.staging_path,
        targets=[Target(p, t.read_only) for p, t in sorted(record.targets.items())],
        loop_devices=devices,
        healthy=healthy,
        health=condition,
        ephemeral=record.ephemeral,
        content_source=record.content_source,
        encrypted=record.spec.encrypted,
        project_id=record.project_id,
    )


def _unaccounted(
    layout: Layout, view: NodeView, volume_ids: set[str], snapshot_ids: set[str]
) -> None:
    def sort(entry: os.DirEntry[str], owned: bool) -> None:
        if entry.name.endswith(SCRATCH_SUFFIXES):
            view.scratch.append(entry.path)
        elif not owned:
            view.unaccounted.append(entry.path)

    for entry in _entries(layout.images_dir):
        stem = entry.name.removesuffix(IMAGE_SUFFIX)
        sort(entry, entry.name.endswith(IMAGE_SUFFIX) and stem in volume_ids)
    for entry in _entries(layout.volumes_dir):
        sort(entry, entry.name in volume_ids)
    for entry in _entries(layout.snapshots_dir):
        stem, ext = os.path.splitext(entry.name)
        sort(entry, ext in (IMAGE_SUFFIX, ".dir") and stem in snapshot_ids)


def inspect(data_dir: Path) -> NodeView:
    """Everything the driver holds under ``data_dir``, read without changing anything."""
    if not data_dir.is_dir():
        raise InspectError(f"{data_dir} is not a directory (is --data-dir right?)")
    layout = Layout(data_dir)
    view = NodeView(str(data_dir))
    try:
        usage = fs.usage(data_dir)
        view.free_bytes, view.size_bytes = usage.available_bytes, usage.total_bytes
    except OSError:
        pass
    try:
        support = quota.support(data_dir)
        view.directory_quota = "on" if support.enforced else f"off: {support.reason}"
    except HostError as exc:
        view.directory_quota = f"unknown: {exc.message}"
    volume_records = read_records(
        layout.state_dir,
        "volume",
        VolumeRecord.from_json,
        migrations.VOLUME_STEPS,
        view.refused,
        overlay=lambda volume_id, data: with_node_use(layout, volume_id, data),
    )
    snapshot_records = read_records(
        layout.snapshot_state_dir,
        "snapshot",
        SnapshotRecord.from_json,
        migrations.SNAPSHOT_STEPS,
        view.refused,
    )
    group_records = read_records(
        layout.group_state_dir,
        "group",
        GroupSnapshotRecord.from_json,
        migrations.GROUP_STEPS,
        view.refused,
    )
    # Only to reach the backends (their paths and the health check): nothing is loaded.
    volumes = Volumes(layout, StateStore(layout))
    host = health.HostView.read()
    loops = loopdev.LoopTable.read()
    view.volumes = [_volume_view(volumes, r, host, loops) for r in volume_records.values()]
    view.snapshots = [
        SnapshotView(
            snapshot_id=s.snapshot_id,
            name=s.name,
            kind=facts_for(s).name,
            size_bytes=s.size_bytes,
            phase=s.phase.value,
            source_volume_id=s.source_volume_id,
            group_snapshot_id=s.group_snapshot_id,
        )
        for s in snapshot_records.values()
    ]
    view.groups = [
        GroupView(g.group_snapshot_id, g.name, g.phase.value, list(g.snapshot_ids))
        for g in group_records.values()
    ]
    # A refused record still accounts for its data: the driver keeps both.
    refused = {Path(r.path).stem for r in view.refused}
    _unaccounted(layout, view, set(volume_records) | refused, set(snapshot_records) | refused)
    return view


# -- text -----------------------------------------------------------------------------
def human(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def render_text(view: NodeView) -> Iterator[str]:
    yield (
        f"data dir {view.data_dir}: {_plural(len(view.volumes), 'volume')}, "
        f"{_plural(len(view.snapshots), 'snapshot')}, "
        f"{_plural(len(view.groups), 'group snapshot')}, "
        f"{_plural(len(view.refused), 'refused record')}, "
        f"{_plural(len(view.unaccounted), 'unaccounted path')}; "
        f"{human(view.free_bytes)} free of {human(view.size_bytes)}"
    )
    yield f"project quotas (directory volumes held to their size): {view.directory_quota}"
    for v in view.volumes:
        kind = f"{v.kind} ({v.fs_type})" if v.fs_type else v.kind
        extras = [x for x in ("ephemeral" * v.ephemeral, "encrypted" * v.encrypted) if x]
        if v.content_source:
            extras.append(f"from {v.content_source}")
        if v.project_id is not None:
            extras.append(f"held to its size (project {v.project_id})")
        elif v.kind == DIRECTORY.name:
            extras.append("size not enforced")
        yield ""
        yield f"volume {v.volume_id}  name={v.name}"
        yield f"  {kind}, {human(v.size_bytes)}, {v.phase}" + "".join(f", {x}" for x in extras)
        yield f"  staged:    {v.staging_path or '-'}"
        if not v.targets:
            yield "  published: -"
        for t in v.targets:
            yield f"  published: {t.path} ({'read-only' if t.read_only else 'read-write'})"
        if v.loop_devices or v.kind != "directory":
            yield f"  loop:      {', '.join(v.loop_devices) or 'not attached'}"
        yield f"  health:    {'ok' if v.healthy else 'ABNORMAL'}: {v.health}"
    for s in view.snapshots:
        yield ""
        group = f", in group {s.group_snapshot_id}" if s.group_snapshot_id else ""
        yield f"snapshot {s.snapshot_id}  name={s.name}"
        yield (
            f"  {s.kind}, {human(s.size_bytes)}, {s.phase}, of volume {s.source_volume_id}{group}"
        )
    for g in view.groups:
        yield ""
        yield f"group snapshot {g.group_snapshot_id}  name={g.name}"
        yield f"  {g.phase}, snapshots: {', '.join(g.snapshot_ids) or '-'}"
    if view.refused:
        yield ""
        yield "refused records (the driver answers FAILED_PRECONDITION for their IDs):"
        for r in view.refused:
            yield f"  {r.store} {r.path}: {r.reason}"
    if view.unaccounted:
        yield ""
        yield "data no record accounts for (left in place by the driver):"
        for path in view.unaccounted:
            yield f"  {path}"
    if view.scratch:
        yield ""
        yield "scratch of interrupted operations (removed by the driver when it starts):"
        for path in view.scratch:
            yield f"  {path}"
