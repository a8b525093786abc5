"""Many volumes in a data root's state, written as the driver leaves them (a record and a
sparse image each) without making them one by one: for tests of what the count of volumes
a node holds costs."""

from __future__ import annotations

import json

from csi.config import MIB
from csi.layout import Layout
from csi.state.records import AccessType, Phase, VolumeKind, VolumeRecord, VolumeSpec

BLOCK = VolumeSpec(VolumeKind.LOOP, AccessType.BLOCK, "")
SIZE = 4 * MIB


def write_held_volumes(layout: Layout, count: int, *, in_use: int = 0) -> list[VolumeRecord]:
    """``count`` raw block volumes of SIZE, ready, the first ``in_use`` of them staged; the
    records are written without fsync (a test's state, not a node's)."""
    layout.ensure()
    made = []
    for index in range(count):
        record = VolumeRecord(
            f"held-{index:05d}",
            f"pvc-held-{index:05d}",
            BLOCK,
            SIZE,
            0.0,
            Phase.READY,
            staging_path=f"/staging/held-{index:05d}" if index < in_use else "",
        )
        layout.record_path(record.volume_id).write_text(json.dumps(record.to_json()))
        with layout.image_path(record.volume_id).open("wb") as image:
            image.truncate(SIZE)
        made.append(record)
    return made
