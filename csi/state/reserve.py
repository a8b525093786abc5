"""Room kept for tearing volumes down, so a full data root never blocks it.

Unpublishing, unstaging and deleting a volume each write a record after the host's side of
the step is done: a temp file and a rename, which need a free block. When a pod has filled
the filesystem under the data root, that write would fail and the volume could never be
torn down, the one that filled the disk included. So the driver keeps a file of
``RESERVE_BYTES`` allocated blocks beside its records. A record write that only gives
something up (a target or staging path gone, a volume marked for deletion, a mount ID
dropped) and finds no space frees the reserve and writes again; the reserve is made again
as soon as space allows (after a volume is deleted, at start-up), and a new record (a volume,
a snapshot, a Docker volume being made) is refused with RESOURCE_EXHAUSTED while it cannot
be: creation never eats the room teardown needs.

The reserve is a plain file with no state in memory: any number of stores share it, and a
crash at any point leaves it present, partly allocated or absent, each of which the next
``ensure`` settles.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from csi.errors import ResourceExhausted
from csi.host import files
from csi.units import show_size

log = logging.getLogger(__name__)

RESERVE_BYTES = 1024 * 1024  # hundreds of record writes of 4 KiB blocks at a time
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class TeardownReserve:
    def __init__(self, path: Path, size: int = RESERVE_BYTES) -> None:
        self.path = path
        self.size = size

    def held(self) -> bool:
        """Whether the reserve's blocks are allocated in full."""
        return files.allocated_bytes(self.path) >= self.size

    def ensure(self) -> bool:
        """Allocate the reserve if it is not (what is allocated already stays, however
        little); whether it is held in full now."""
        if self.held():
            return True
        try:
            files.allocate(self.path, self.size)
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                raise
            return False
        log.info("event=teardown_reserve_held path=%s bytes=%d", self.path, self.size)
        return True

    def require(self) -> None:
        """Before something new is written: the reserve held, or RESOURCE_EXHAUSTED."""
        if not self.ensure():
            raise ResourceExhausted(
                "the data root's filesystem is full: the driver keeps "
                f"{show_size(self.size)} of it free so that volumes can always be torn down, "
                "and makes nothing new until there is room for that again; delete volumes "
                "or free space on it"
            )

    def release(self) -> bool:
        """Give the reserve's blocks back for a teardown; whether there was any."""
        freed = files.allocated_bytes(self.path) > 0
        files.remove_file(self.path)
        if freed:
            log.warning(
                "event=teardown_reserve_released path=%s reason=data_root_full "
                "action=teardown_continues",
                self.path,
            )
        return freed
