"""One JSON file per record, written atomically; an in-memory index for lookups.

Durability follows what a field describes. What outlives a reboot (that a volume exists,
its phase, size and spec; a snapshot; a group) is written to a temp file, fsynced, renamed
over the record and the directory fsynced: a crash or a power loss leaves the old record
or the new one, never a torn file. A volume's node use (staging path, staged_read_only,
targets) describes mounts and attached loop devices, which a power loss removes anyway:
it lives in a file of its own under ``state/node/`` that wins over the node use held in
the record file, written through a temp file and a rename but never fsynced. A crash of
the process keeps it whole; a power loss may leave it older, empty or missing, and then
the node use is an older one while nothing at all is mounted (start-up reconciliation
and the next stage or unpublish settle it). Because the two live in separate files, a
power loss never costs a record its durable facts.

Callers never choose: `put` compares the new record with the one it replaces and fsyncs
only when a durable field changed (or the record is new). The same comparison tells a write
that only gives something up (a teardown step): on a full filesystem it may use the room
kept for that (csi.state.reserve); a new record is refused while that room cannot be kept.
Callers serialise writes per record (csi.locks); the index has its own small lock.

Loading upgrades older records (csi.state.migrations) and writes them back. A record that
cannot be read is damage: reported and quarantined, left in place. A record from a newer
driver is neither: it is left untouched and every call on it is refused with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from csi.errors import FailedPrecondition, NotFound
from csi.host import modes
from csi.host.fs import fsync_dir, write_atomically
from csi.layout import Layout, check_id, is_valid_id
from csi.state import migrations
from csi.state.migrations import RecordTooNew
from csi.state.records import GroupSnapshotRecord, Phase, SnapshotRecord, VolumeRecord
from csi.state.reserve import NO_SPACE, TeardownReserve

log = logging.getLogger(__name__)


class Record(Protocol):
    @property
    def record_id(self) -> str: ...

    @property
    def phase(self) -> Phase: ...

    @property
    def name(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Record)
R_contra = TypeVar("R_contra", bound=Record, contravariant=True)


class Watcher(Protocol[R_contra]):
    """Told of every record the store holds as it changes (csi.volumes.ledger keeps sums)."""

    def reset(self, records: Iterable[R_contra]) -> None:
        """The store now holds ``records``: at ``watch`` and after each load."""

    def changed(self, before: R_contra | None, after: R_contra | None) -> None:
        """A record was written (``before`` None: a new one) or removed (``after`` None);
        told while the writer still holds the record's lock, so in the order of writes."""


@dataclass(frozen=True)
class DamagedRecord:
    path: Path
    reason: str


class RecordStore(Generic[R]):
    what = "record"  # how errors name this store's records

    use_fields: tuple[str, ...] = ()  # JSON keys of the node use, kept without fsync

    def __init__(
        self,
        directory: Path,
        decode: Callable[[dict[str, Any]], R],
        steps: Mapping[int, migrations.Step],
        reserve: TeardownReserve,
        use_directory: Path | None = None,
    ) -> None:
        self._directory = directory
        self._reserve = reserve
        self._use_directory = use_directory
        self._decode = decode
        self._steps = steps
        self._lock = threading.Lock()
        self._by_id: dict[str, R] = {}
        self._with_use: set[str] = set()  # IDs whose node-use file exists
        self._quarantined: set[str] = set()
        self._too_new: dict[str, str] = {}  # ID -> why this driver leaves it alone
        self._watchers: list[Watcher[R]] = []

    def watch(self, watcher: Watcher[R]) -> None:
        """Tell ``watcher`` what the store holds now and of every change from now on."""
        self._watchers.append(watcher)
        watcher.reset(self.all())

    def path(self, record_id: str) -> Path:
        return self._directory / f"{check_id(record_id)}.json"

    def use_path(self, record_id: str) -> Path | None:
        """The file of the record's node use, if this store keeps one."""
        if self._use_directory is None:
            return None
        return self._use_directory / f"{check_id(record_id)}.json"

    # -- loading -----------------------------------------------------------------
    def load(self) -> list[DamagedRecord]:
        """Read every record from disk, upgrading older ones; unreadable ones are reported,
        never deleted; ones from a newer driver are kept aside (``too_new``)."""
        damaged: list[DamagedRecord] = []
        by_id: dict[str, R] = {}
        too_new: dict[str, str] = {}
        upgraded: list[R] = []
        for entry in sorted(os.scandir(self._directory), key=lambda e: e.name):
            if entry.name.endswith(".tmp"):
                os.unlink(entry.path)  # an interrupted write; the real record is intact
                continue
            stem, ext = os.path.splitext(entry.name)
            if ext != ".json" or not is_valid_id(stem):
                damaged.append(DamagedRecord(Path(entry.path), "unexpected file name"))
                continue
            try:
                data, older = migrations.upgrade(_read_json(entry.path), self._steps)
                record = self._decode(data)
            except RecordTooNew as exc:
                too_new[stem] = str(exc)
                log.error("event=record_too_new path=%s action=left_untouched %s", entry.path, exc)
                continue
            except Exception as exc:  # any record that cannot be read is damage, nothing more
                damaged.append(DamagedRecord(Path(entry.path), type(exc).__name__))
                continue
            if record.record_id != stem:
                damaged.append(DamagedRecord(Path(entry.path), "ID does not match file name"))
                continue
            by_id[record.record_id] = record
            if older:
                upgraded.append(record)
        with_use = self._load_use(by_id, set(too_new) | {d.path.stem for d in damaged})
        for record in upgraded:
            self._write(record)
            log.info(
                "event=record_upgraded record=%s schema=%d", record.record_id, migrations.CURRENT
            )
        with self._lock:
            self._by_id = by_id
            self._with_use = with_use
            self._too_new = too_new
            self._quarantined = {
                d.path.stem
                for d in damaged
                if d.path.suffix == ".json" and is_valid_id(d.path.stem)
            }
        for watcher in self._watchers:
            watcher.reset(by_id.values())
        return damaged

    def _load_use(self, by_id: dict[str, R], left_alone: set[str]) -> set[str]:
        """Lay each node-use file over its record (in ``by_id``); returns their IDs.

        One that cannot be read is what a power loss can leave: the record keeps the node
        use its own file holds (an older one; nothing is mounted after a power loss
        anyway). Files of no record are leftovers of a removal and go, unless the record
        is damaged or a newer driver's."""
        found: set[str] = set()
        if self._use_directory is None:
            return found
        self._use_directory.mkdir(mode=modes.PRIVATE_DIR, exist_ok=True)
        for entry in os.scandir(self._use_directory):
            stem, ext = os.path.splitext(entry.name)
            if entry.name.endswith(".tmp") or (ext == ".json" and stem not in left_alone):
                record = by_id.get(stem)
                if record is not None and not entry.name.endswith(".tmp"):
                    merged = self._with_use_file(record, Path(entry.path))
                    if merged is not None:
                        by_id[stem] = merged
                        found.add(stem)
                        continue
                os.unlink(entry.path)
        return found

    def _with_use_file(self, record: R, path: Path) -> R | None:
        try:
            use = _read_json(path)
            if use.get("schema") != migrations.CURRENT:
                raise ValueError(f"node use of schema {use.get('schema')!r}")
            data = record.to_json()
            data.update({k: use[k] for k in self.use_fields})
            return self._decode(data)
        except Exception as exc:  # what a power loss left: the record's own node use stands
            log.warning(
                "event=node_use_unreadable path=%s error=%s action=record_file_node_use_kept",
                path,
                type(exc).__name__,
            )
            return None

    # -- queries -----------------------------------------------------------------
    def get(self, record_id: str) -> R | None:
        with self._lock:
            return self._by_id.get(record_id)

    def require_ready(self, record_id: str) -> R:
        """The finished record, or NOT_FOUND; FAILED_PRECONDITION if it is refused."""
        self.check_usable(record_id)
        record = self.get(record_id)
        if record is None or record.phase is not Phase.READY:
            raise NotFound(f"{self.what} {record_id} does not exist")
        return record

    def is_quarantined(self, record_id: str) -> bool:
        """True if the record exists on disk but could not be read."""
        with self._lock:
            return record_id in self._quarantined

    def quarantined(self) -> list[str]:
        with self._lock:
            return sorted(self._quarantined)

    def too_new(self) -> list[str]:
        """IDs of records a newer driver wrote, which this one leaves alone."""
        with self._lock:
            return sorted(self._too_new)

    def check_usable(self, record_id: str) -> None:
        """FAILED_PRECONDITION if calls on this ID must be refused: its record is damaged,
        could not be settled, or was written by a newer driver."""
        with self._lock:
            quarantined = record_id in self._quarantined
            newer = self._too_new.get(record_id)
        if newer is not None:
            raise FailedPrecondition(f"the {self.what}'s state record was {newer}")
        if quarantined:
            raise FailedPrecondition(f"the {self.what}'s state record is damaged; see the log")

    def quarantine(self, record_id: str) -> None:
        """Refuse further calls on a record whose interrupted operation could not be settled."""
        with self._lock:
            self._quarantined.add(record_id)

    def all(self) -> list[R]:
        with self._lock:
            return list(self._by_id.values())

    def sorted_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._by_id)

    def count(self) -> int:
        with self._lock:
            return len(self._by_id)

    # -- writes ------------------------------------------------------------------
    def put(self, record: R) -> None:
        """Write ``record``: fsynced if it is new or a durable field changed; a change of
        node use alone is only made crash-atomic (see the module's docstring)."""
        record_id = record.record_id
        with self._lock:
            newer = self._too_new.get(record_id)
            old = self._by_id.get(record_id)
            has_use_file = record_id in self._with_use
        if newer is not None:  # never overwrite what a newer driver wrote
            raise FailedPrecondition(f"the {self.what}'s state record was {newer}")
        data = record.to_json()
        use = {k: data[k] for k in self.use_fields}
        if old is None:
            self._reserve.require()
            durable, use_changed, teardown = True, has_use_file, False
        else:
            before = old.to_json()
            use_changed = use != {k: before[k] for k in self.use_fields}
            durable = any(data[k] != before[k] for k in data if k not in self.use_fields)
            teardown = gives_up(before, data)
        # The node-use file, when there is one, wins at load: it changes first, so a crash
        # between the two writes leaves the new node use beside the old durable facts.
        if use_changed and (has_use_file or not durable):
            self._room_for(teardown, lambda: self._write_use(record_id, use))
        if durable:
            self._room_for(teardown, lambda: self._write(record))
        with self._lock:
            self._by_id[record_id] = record
            if use_changed and (has_use_file or not durable):
                self._with_use.add(record_id)
        for watcher in self._watchers:
            watcher.changed(old, record)

    def _room_for(self, teardown: bool, write: Callable[[], None]) -> None:
        """Run ``write``; a teardown step that finds the filesystem full frees the reserve
        and writes again."""
        try:
            write()
        except OSError as exc:
            if not teardown or exc.errno not in NO_SPACE or not self._reserve.release():
                raise
            write()

    def _write(self, record: R) -> None:
        data = json.dumps(record.to_json(), sort_keys=True, separators=(",", ":")).encode()
        write_atomically(self.path(record.record_id), data)

    def _write_use(self, record_id: str, use: dict[str, Any]) -> None:
        path = self.use_path(record_id)
        assert path is not None, "node use changed in a store that keeps none"
        data = json.dumps({"schema": migrations.CURRENT, **use}, sort_keys=True).encode()
        write_atomically(path, data, durable=False)

    def remove(self, record_id: str) -> None:
        """Remove the record durably (its node-use file first, without waiting)."""
        path = self.path(record_id)
        use_path = self.use_path(record_id)
        if use_path is not None:
            use_path.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
        with self._lock:
            old = self._by_id.pop(record_id, None)
            self._with_use.discard(record_id)
        if old is not None:
            for watcher in self._watchers:
                watcher.changed(old, None)
        # What the record stood for is gone: room again, perhaps, for the reserve.
        try:
            self._reserve.ensure()
        except OSError as exc:
            log.warning("event=teardown_reserve_not_made path=%s error=%s", exc.filename, exc)


def gives_up(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether a record's change only takes something away (a teardown step): it is marked
    for deletion, or each field keeps its value, is emptied, or keeps part of what it held
    (a target, a mount ID fewer)."""
    if after.get("phase") == Phase.DELETING.value and before.get("phase") != after.get("phase"):
        return True
    for key, now in after.items():
        then = before.get(key)
        if now == then or not now:
            continue
        if isinstance(now, dict) and isinstance(then, dict) and now.items() <= then.items():
            continue
        if isinstance(now, list) and isinstance(then, list) and all(i in then for i in now):
            continue
        return False
    return True


def _read_json(path: str | Path) -> Any:
    """A record file's JSON (UTF-8, as the store writes it), read as bytes: at start-up the
    store reads every record, and a text-mode file object costs more than the read."""
    with open(path, "rb") as fh:
        return json.loads(fh.read())


def volume_json(layout: Layout, volume_id: str) -> dict[str, Any] | None:
    """A volume's record as the driver reads it at start (its node-use file, if readable,
    laid over the record file), for tools and tests that look from outside; None if the
    record file is missing. Raises what the record file's JSON raises."""
    path = layout.record_path(volume_id)
    if not path.exists():
        return None
    data: dict[str, Any] = _read_json(path)
    return with_node_use(layout, volume_id, data)


def with_node_use(layout: Layout, volume_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a volume record's JSON) with its node-use file, if readable, laid over it."""
    try:
        path = layout.node_use_dir / f"{check_id(volume_id)}.json"
        use = _read_json(path)
    except (OSError, ValueError):
        return data
    if isinstance(use, dict) and use.get("schema") == data.get("schema"):
        data.update({k: use[k] for k in StateStore.use_fields if k in use})
    return data


class StateStore(RecordStore[VolumeRecord]):
    """Volume records under ``<data-dir>/state/volumes``."""

    what = "volume"
    use_fields = ("staging_path", "staged_read_only", "targets")

    def __init__(self, layout: Layout) -> None:
        super().__init__(
            layout.state_dir,
            VolumeRecord.from_json,
            migrations.VOLUME_STEPS,
            TeardownReserve(layout.teardown_reserve),
            use_directory=layout.node_use_dir,
        )


class SnapshotStore(RecordStore[SnapshotRecord]):
    """Snapshot records under ``<data-dir>/state/snapshots``."""

    what = "snapshot"

    def __init__(self, layout: Layout) -> None:
        super().__init__(
            layout.snapshot_state_dir,
            SnapshotRecord.from_json,
            migrations.SNAPSHOT_STEPS,
            TeardownReserve(layout.teardown_reserve),
        )


class GroupSnapshotStore(RecordStore[GroupSnapshotRecord]):
    """Group snapshot records under ``<data-dir>/state/groups``."""

    what = "group snapshot"

    def __init__(self, layout: Layout) -> None:
        super().__init__(
            layout.group_state_dir,
            GroupSnapshotRecord.from_json,
            migrations.GROUP_STEPS,
            TeardownReserve(layout.teardown_reserve),
        )
