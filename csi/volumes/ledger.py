"""The node's space accounts, kept as volume records change rather than counted per question.

A capacity question (CreateVolume's and expansion's reservation, GetCapacity) needs two sums
over every volume: the bytes provisioned (against --capacity-limit) and the bytes promised
but not yet taken (csi.volumes.sizing.promised_by: a sparse image's size less its allocated
blocks, a held directory's size less its project's charge). Counted afresh, a question costs
a stat or a quota reading per volume, and grows with every volume the node holds.

Here both are kept. What a volume is provisioned changes only with its record (size,
phase): the store reports every change (RecordStore.watch) and the sum is adjusted. What a
volume takes changes only while something writes to it: a pod, through a stage or a
publication, which its record shows (in use); or the driver's own making, copying and
growing, each of which ends in a change of the record. So an idle volume's promise is read
once after its record last changed and kept, and a volume in use is read at every question.
A question costs the volumes in use and those changed since the last one, never all of them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from csi.layout import Layout
from csi.state.records import VolumeRecord
from csi.volumes.sizing import counted, promised_by, promises


class SpaceLedger:
    def __init__(self, layout: Layout) -> None:
        self._layout = layout
        self._lock = threading.Lock()  # the sums and the sets below; held for one question
        self._provisioned = 0
        self._settled_promise = 0  # the kept promises of idle volumes, summed
        self._settled: dict[str, int] = {}  # idle volume's ID -> its promise as last read
        self._changed: dict[str, VolumeRecord] = {}  # to read once, at the next question
        self._in_use: dict[str, VolumeRecord] = {}  # to read at every question

    # -- the store's reports -----------------------------------------------------------
    def reset(self, records: Iterable[VolumeRecord]) -> None:
        """Start from ``records`` (the store as loaded): each one's promise read when first
        asked."""
        with self._lock:
            self._provisioned = 0
            self._settled_promise = 0
            self._settled.clear()
            self._changed.clear()
            self._in_use.clear()
            for record in records:
                self._enter(record)

    def changed(self, before: VolumeRecord | None, after: VolumeRecord | None) -> None:
        """A record was written (``before`` None: new) or removed (``after`` None)."""
        with self._lock:
            if before is not None:
                self._leave(before)
            if after is not None:
                self._enter(after)

    def _enter(self, record: VolumeRecord) -> None:
        if not counted(record):
            return
        self._provisioned += record.capacity_bytes
        if not promises(record):
            return
        (self._in_use if record.in_use else self._changed)[record.volume_id] = record

    def _leave(self, record: VolumeRecord) -> None:
        if not counted(record):
            return
        self._provisioned -= record.capacity_bytes
        volume_id = record.volume_id
        self._settled_promise -= self._settled.pop(volume_id, 0)
        self._changed.pop(volume_id, None)
        self._in_use.pop(volume_id, None)

    # -- questions ---------------------------------------------------------------------
    def provisioned(self) -> int:
        """The sizes of every volume not being deleted, summed."""
        with self._lock:
            return self._provisioned

    def promised(self) -> int:
        """What the volumes may still take from the disk: the kept promises of idle
        volumes, those changed since the last question (read now and kept), and those in
        use (read now)."""
        with self._lock:
            for volume_id, record in self._changed.items():
                promise = self._promise_of(record)
                self._settled[volume_id] = promise
                self._settled_promise += promise
            self._changed.clear()
            return self._settled_promise + sum(map(self._promise_of, self._in_use.values()))

    def _promise_of(self, record: VolumeRecord) -> int:
        return promised_by(record, self._layout)
