"""The data root's own health: what NodeGetStorageHealth reports (rows in conditions.py)."""

from __future__ import annotations

from pathlib import Path

from csi.host import fs, loopspace
from csi.volumes.conditions import Condition, found
from csi.volumes.conditions import Problem as P

# Below this share of free space (or inodes) the root is "nearly full".
NEARLY_FULL_SHARE = 0.05
# Less than this is "full": not one more small file or directory fits.
FULL_BYTES = 1024 * 1024


def _mib(value: int) -> int:
    return value // (1024 * 1024)


def check(root: Path, loop_volumes: bool = True) -> list[Condition]:
    """Every condition of the data root ``root``; an empty list when it is healthy.

    ``loop_volumes``: whether loop devices matter here (the check is skipped otherwise).
    """
    try:
        st = fs.space(root)
    except FileNotFoundError:
        return [found(P.ROOT_MISSING, path=root)]
    except OSError as exc:
        return [found(P.ROOT_MISSING, path=f"{root} ({exc.strerror})")]
    found_: list[Condition] = []
    if st.read_only:
        found_.append(found(P.ROOT_READ_ONLY, path=root))
    total, free = st.total_bytes, st.available_bytes
    files, favail = st.total_inodes, st.available_inodes
    if free < FULL_BYTES or (files and favail == 0):
        unit = "space" if free < FULL_BYTES else "inodes"
        found_.append(found(P.ROOT_FULL, path=root, unit=unit))
    elif total and free < total * NEARLY_FULL_SHARE:
        found_.append(
            found(P.ROOT_NEARLY_FULL, path=root, free=_mib(free), total=_mib(total), unit="MiB")
        )
    elif files and favail < files * NEARLY_FULL_SHARE:
        found_.append(found(P.ROOT_NEARLY_FULL, path=root, free=favail, total=files, unit="inodes"))
    if loop_volumes:
        space = loopspace.read()
        if space.exhausted:
            found_.append(found(P.LOOP_DEVICES_EXHAUSTED, count=space.devices))
    return found_
