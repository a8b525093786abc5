"""Record schemas over time, and the chain of steps that brings an older record up to date.

Every record file carries ``schema``. At start the store reads each file, runs the steps
from its schema up to ``CURRENT`` (each step takes the JSON of one schema and returns the
JSON of the next) and writes the result back. A record of a schema above ``CURRENT`` was
written by a newer driver: it is refused with ``RecordTooNew``, kept as it is and never
rewritten or treated as damage.

A step knows only the shape it starts from, so it spells out that shape's keys here rather
than borrowing today's parsing: a later change to how parameters are read must not change
what an old record meant.

History:
  1  volumes kept their StorageClass parameters as normalised strings (``parameters``)
     beside ``kind``, ``access_type`` and ``fs_type``.
  2  volumes hold the parsed spec (``spec``: kind, access type, filesystem, encryption, root
     mode, allowed mount options); snapshots and group snapshots are unchanged.
  3  volumes name the project quota ID holding a directory volume to its size
     (``project_id``, null: not held); every volume of schema 2 was made unheld.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

CURRENT = 3

Step = Callable[[dict[str, Any]], dict[str, Any]]


class RecordTooNew(Exception):
    """The record was written by a driver newer than this one."""

    def __init__(self, schema: int) -> None:
        super().__init__(
            f"written by a newer driver (record schema {schema}; this driver reads schemas "
            f"up to {CURRENT}): run that driver version or a newer one"
        )
        self.schema = schema


def _volume_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    """``parameters`` (strings) -> ``spec``; kind, access type and filesystem move into it."""
    params = {str(k): str(v) for k, v in dict(data.pop("parameters")).items()}
    mode = params.get("mode")
    allowed = params.get("allowedMountOptions", "")
    data["spec"] = {
        "kind": data.pop("kind"),
        "access_type": data.pop("access_type"),
        "fs_type": data.pop("fs_type"),
        "encrypted": params.get("encryption") == "fscrypt",
        "mode": int(mode, 8) if mode else None,
        "allowed_mount_options": sorted({n for n in allowed.split(",") if n}),
    }
    return data


def _volume_2_to_3(data: dict[str, Any]) -> dict[str, Any]:
    """No volume of schema 2 was held to its size by a project quota."""
    data["project_id"] = None
    return data


def _unchanged(data: dict[str, Any]) -> dict[str, Any]:
    return data


VOLUME_STEPS: Mapping[int, Step] = {1: _volume_1_to_2, 2: _volume_2_to_3}
SNAPSHOT_STEPS: Mapping[int, Step] = {1: _unchanged, 2: _unchanged}
GROUP_STEPS: Mapping[int, Step] = {1: _unchanged, 2: _unchanged}


def upgrade(data: dict[str, Any], steps: Mapping[int, Step]) -> tuple[dict[str, Any], bool]:
    """``data`` brought to ``CURRENT``, and whether it was older. ValueError for a record
    with no usable schema (damage); RecordTooNew for one from a newer driver."""
    schema = data.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise ValueError(f"unsupported record schema {schema!r}")
    if schema > CURRENT:
        raise RecordTooNew(schema)
    older = schema < CURRENT
    while schema < CURRENT:
        data = steps[schema](dict(data))
        schema += 1
        data["schema"] = schema
    return data, older
