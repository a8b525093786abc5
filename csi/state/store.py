"""One JSON file per record, written atomically; an in-memory index for lookups.

Writes go to a temp file, are fsynced, renamed over the record and the directory is
fsynced, so a crash leaves either the old record or the new one, never a torn file.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from csi.errors import FailedPrecondition, NotFound
from csi.host.fs import fsync_dir, write_atomically
from csi.layout import Layout, check_id, is_valid_id
from csi.state import migrations
from csi.state.migrations import RecordTooNew
from csi.state.records import GroupSnapshotRecord, Phase, SnapshotRecord, VolumeRecord

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


@dataclass(frozen=True)
class DamagedRecord:
    path: Path
    reason: str


class RecordStore(Generic[R]):
    what = "record"  # how errors name this store's records

    def __init__(
        self,
        directory: Path,
        decode: Callable[[dict[str, Any]], R],
        steps: Mapping[int, migrations.Step],
    ) -> None:
        self._directory = directory
        self._decode = decode
        self._steps = steps
        self._lock = threading.Lock()
        self._by_id: dict[str, R] = {}
        self._quarantined: set[str] = set()
        self._too_new: dict[str, str] = {}  # ID -> why this driver leaves it alone

    def path(self, record_id: str) -> Path:
        return self._directory / f"{check_id(record_id)}.json"

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
                with open(entry.path, encoding="utf-8") as fh:
                    data, older = migrations.upgrade(json.load(fh), self._steps)
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
        for record in upgraded:
            self._write(record)
            log.info(
                "event=record_upgraded record=%s schema=%d", record.record_id, migrations.CURRENT
            )
        with self._lock:
            self._by_id = by_id
            self._too_new = too_new
            self._quarantined = {
                d.path.stem
                for d in damaged
                if d.path.suffix == ".json" and is_valid_id(d.path.stem)
            }
        return damaged

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
        with self._lock:
            newer = self._too_new.get(record.record_id)
        if newer is not None:  # never overwrite what a newer driver wrote
            raise FailedPrecondition(f"the {self.what}'s state record was {newer}")
        self._write(record)
        with self._lock:
            self._by_id[record.record_id] = record

    def _write(self, record: R) -> None:
        data = json.dumps(record.to_json(), sort_keys=True, separators=(",", ":")).encode()
        write_atomically(self.path(record.record_id), data)

    def remove(self, record_id: str) -> None:
        path = self.path(record_id)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
        with self._lock:
            self._by_id.pop(record_id, None)


class StateStore(RecordStore[VolumeRecord]):
    """Volume records under ``<data-dir>/state/volumes``."""

    what = "volume"

    def __init__(self, layout: Layout) -> None:
        super().__init__(layout.state_dir, VolumeRecord.from_json, migrations.VOLUME_STEPS)


class SnapshotStore(RecordStore[SnapshotRecord]):
    """Snapshot records under ``<data-dir>/state/snapshots``."""

    what = "snapshot"

    def __init__(self, layout: Layout) -> None:
        super().__init__(
            layout.snapshot_state_dir, SnapshotRecord.from_json, migrations.SNAPSHOT_STEPS
        )


class GroupSnapshotStore(RecordStore[GroupSnapshotRecord]):
    """Group snapshot records under ``<data-dir>/state/groups``."""

    what = "group snapshot"

    def __init__(self, layout: Layout) -> None:
        super().__init__(
            layout.group_state_dir, GroupSnapshotRecord.from_json, migrations.GROUP_STEPS
        )
