"""What a snapshot of a loop volume holds, block by block, for the SnapshotMetadata service.

Allocated ranges are the image's data extents (a sparse image never wrote its holes).
The delta between two snapshots of one volume is every block whose bytes differ: parts the
two copies still share on disk (reflinked copies, FIEMAP says so) are skipped unread; the
rest of their data ranges is compared. A hole in both is unchanged; a block written in one
and a hole in the other counts as changed unless it reads as zeros in both.
"""

from __future__ import annotations

from pathlib import Path

from csi.errors import InvalidArgument, OutOfRange
from csi.host import extents
from csi.host.errors import ExtentsUnavailable
from csi.host.extents import Range
from csi.state.records import SnapshotRecord
from csi.volumes.backend import facts_for
from csi.volumes.snapshots import Snapshots


def _image(snapshots: Snapshots, snapshot: SnapshotRecord) -> Path:
    if not facts_for(snapshot).loop_device:
        raise InvalidArgument(
            f"snapshot {snapshot.snapshot_id} is of a directory volume: it has no blocks"
        )
    return snapshots.content_path(snapshot)


def check_offset(snapshot: SnapshotRecord, start: int) -> None:
    if start < 0 or start > snapshot.size_bytes:
        raise OutOfRange(
            f"starting_offset {start} is outside the volume (0 to {snapshot.size_bytes} bytes)"
        )


def clip(ranges: list[Range], start: int, end: int) -> list[Range]:
    """``ranges`` within [start, end); a range across ``start`` begins there."""
    out = []
    for offset, length in ranges:
        lo, hi = max(offset, start), min(offset + length, end)
        if lo < hi:
            out.append((lo, hi - lo))
    return out


def allocated(snapshots: Snapshots, snapshot: SnapshotRecord, start: int) -> list[Range]:
    check_offset(snapshot, start)
    image = _image(snapshots, snapshot)
    return clip(extents.data_ranges(image, start), start, snapshot.size_bytes)


def delta(
    snapshots: Snapshots, base: SnapshotRecord, target: SnapshotRecord, start: int
) -> list[Range]:
    if base.source_volume_id != target.source_volume_id:
        raise InvalidArgument("base and target snapshots are of different volumes")
    check_offset(target, start)
    old, new = _image(snapshots, base), _image(snapshots, target)
    end = target.size_bytes
    candidates = extents.merge(extents.data_ranges(old) + extents.data_ranges(new))
    # Past the base's end the volume grew: everything written there is new.
    try:
        same = extents.shared_ranges(extents.mapping(old), extents.mapping(new))
    except ExtentsUnavailable:
        same = []
    to_compare = extents.subtract(clip(candidates, start, end), same)
    return clip(extents.differing(old, new, to_compare), start, end)
