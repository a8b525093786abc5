"""One JSON file per volume, written atomically; an in-memory index for lookups.

Writes go to a temp file, are fsynced, renamed over the record and the directory is
fsynced, so a crash leaves either the old record or the new one, never a torn file.
Callers serialise writes per volume (csi.locks); the index has its own small lock.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from csi.host.fs import fsync_dir
from csi.layout import Layout, is_valid_id
from csi.state.records import VolumeRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DamagedRecord:
    path: Path
    reason: str


class StateStore:
    def __init__(self, layout: Layout) -> None:
        self._layout = layout
        self._lock = threading.Lock()
        self._by_id: dict[str, VolumeRecord] = {}
        self._by_name: dict[str, str] = {}
        self._quarantined: set[str] = set()

    # -- loading -----------------------------------------------------------------
    def load(self) -> list[DamagedRecord]:
        """Read every record from disk; unreadable ones are reported, never deleted."""
        damaged: list[DamagedRecord] = []
        by_id: dict[str, VolumeRecord] = {}
        directory = self._layout.state_dir
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if entry.name.endswith(".tmp"):
                os.unlink(entry.path)  # an interrupted write; the real record is intact
                continue
            stem, ext = os.path.splitext(entry.name)
            if ext != ".json" or not is_valid_id(stem):
                damaged.append(DamagedRecord(Path(entry.path), "unexpected file name"))
                continue
            try:
                with open(entry.path, encoding="utf-8") as fh:
                    record = VolumeRecord.from_json(json.load(fh))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                damaged.append(DamagedRecord(Path(entry.path), type(exc).__name__))
                continue
            if record.volume_id != stem:
                damaged.append(DamagedRecord(Path(entry.path), "ID does not match file name"))
                continue
            by_id[record.volume_id] = record
        with self._lock:
            self._by_id = by_id
            self._by_name = {r.name: r.volume_id for r in by_id.values()}
            self._quarantined = {
                d.path.stem
                for d in damaged
                if d.path.suffix == ".json" and is_valid_id(d.path.stem)
            }
        return damaged

    # -- queries -----------------------------------------------------------------
    def get(self, volume_id: str) -> VolumeRecord | None:
        with self._lock:
            return self._by_id.get(volume_id)

    def is_quarantined(self, volume_id: str) -> bool:
        """True if the volume's record exists on disk but could not be read."""
        with self._lock:
            return volume_id in self._quarantined

    def id_for_name(self, name: str) -> str | None:
        with self._lock:
            return self._by_name.get(name)

    def all(self) -> list[VolumeRecord]:
        with self._lock:
            return list(self._by_id.values())

    def sorted_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._by_id)

    def count(self) -> int:
        with self._lock:
            return len(self._by_id)

    # -- writes ------------------------------------------------------------------
    def put(self, record: VolumeRecord) -> None:
        path = self._layout.record_path(record.volume_id)
        tmp = path.with_name(path.name + ".tmp")
        data = json.dumps(record.to_json(), sort_keys=True, separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.rename(tmp, path)
            fsync_dir(path.parent)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        with self._lock:
            self._by_id[record.volume_id] = record
            self._by_name[record.name] = record.volume_id

    def remove(self, volume_id: str) -> None:
        path = self._layout.record_path(volume_id)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
        with self._lock:
            record = self._by_id.pop(volume_id, None)
            if record is not None and self._by_name.get(record.name) == volume_id:
                del self._by_name[record.name]
