"""Directory volumes held to their size: the node's rule, and the project IDs it hands out.

``--directory-quota`` chooses the rule: ``enforce`` (the default) holds every new directory
volume to its size where the data root's filesystem has project quotas on, and makes it
unenforced (as before) where not; ``require`` refuses new directory volumes where it cannot
hold them; ``off`` never sets a quota. What the filesystem can do is read once, at start
(``DirectoryQuotas.detect``), logged once, and shown by ``inspect`` and ``/metrics``.

A volume's project ID is in its record before the directory is made, so after a crash the
record names every ID that may be charged on disk. An ID is handed out only if no record
holds it and the filesystem charges nothing to it and limits nothing for it: IDs other
software uses (the kubelet's emptyDir quotas start at 1048577, admins' projects are usually
small numbers) and IDs of deleted volumes whose usage xfs is still freeing in the background
are never taken. The search starts where the last one ended, so it costs one quota reading
in the common case, whatever the number of volumes.

Inodes are held too: a volume may make as many files as it would have inodes if it were an
ext4 filesystem of its own size with the data root's ratio of inodes to bytes (at least
MIN_INODES), so no volume can use up the data root's inode table by itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path

from csi.config import QuotaMode
from csi.errors import FailedPrecondition, ResourceExhausted
from csi.host import fs, quota
from csi.host.errors import HostError
from csi.host.quota import Support

LOG = logging.getLogger(__name__)

# Project IDs the driver hands out: below the kubelet's (from 1048577), above what people
# number by hand.
FIRST_PROJECT = 1 << 19
LAST_PROJECT = 1 << 20
MIN_INODES = 1024


class ProjectIds:
    """Project IDs in [first, last): which are held by records, and the next free one."""

    def __init__(
        self, root: Path, held: Iterable[int], first: int = FIRST_PROJECT, last: int = LAST_PROJECT
    ) -> None:
        self._root = root
        self._first, self._last = first, last
        self._held = set(held)
        self._next = first
        self._lock = threading.Lock()

    def take(self) -> int:
        """A free ID, held until ``give_back``; RESOURCE_EXHAUSTED when none is left."""
        with self._lock:
            for _ in range(self._last - self._first):
                candidate = self._next
                self._next = candidate + 1 if candidate + 1 < self._last else self._first
                if candidate in self._held:
                    continue
                if not quota.charge(self._root, candidate).idle:
                    continue  # someone else's, or a deleted volume's still being freed
                self._held.add(candidate)
                return candidate
        raise ResourceExhausted(
            f"no free project ID left between {self._first} and {self._last - 1} for a "
            "directory volume held to its size"
        )

    def give_back(self, project: int) -> None:
        """Once no record names ``project`` any more."""
        with self._lock:
            self._held.discard(project)


class DirectoryQuotas:
    """Whether new directory volumes are held to their size on this node, and the steps.
    Nothing is enforced until ``detect`` has read the filesystem (at start, once the
    records are loaded: their project IDs are taken)."""

    def __init__(self, root: Path, mode: QuotaMode) -> None:
        self.root = root
        self.mode = QuotaMode(mode)
        self.support = Support(False, "not read yet")
        self._ids: ProjectIds | None = None

    def detect(self, held: Iterable[int]) -> None:
        """Read what the data root's filesystem can do, and say it once."""
        if self.mode is QuotaMode.OFF:
            self.support = Support(False, "--directory-quota=off")
        else:
            try:
                self.support = quota.support(self.root)
            except HostError as exc:  # never a reason not to serve: unheld, and said why
                self.support = Support(
                    False, f"the data root's quotas cannot be read: {exc.message}"
                )
        self._ids = ProjectIds(self.root, held) if self.enforced else None
        if self.enforced:
            LOG.info("event=directory_quota enforced=true")
        else:
            LOG.warning(
                "event=directory_quota enforced=false mode=%s: directory volumes are not "
                "held to their size (%s)",
                self.mode,
                self.support.reason,
            )

    @property
    def enforced(self) -> bool:
        return self.mode is not QuotaMode.OFF and self.support.enforced

    def project_for_new_volume(self) -> int | None:
        """The project of a new directory volume (None: unenforced); FAILED_PRECONDITION
        under ``require`` where the filesystem cannot hold it."""
        if self._ids is not None:
            return self._ids.take()
        if self.mode is QuotaMode.REQUIRE:
            raise FailedPrecondition(
                "this node's driver requires directory volumes to be held to their size "
                f"(--directory-quota=require), and it cannot: {self.support.reason}"
            )
        return None

    def forget(self, project: int | None) -> None:
        """The record naming ``project`` is gone: the ID may be handed out again (once the
        filesystem charges nothing to it)."""
        if project is not None and self._ids is not None:
            self._ids.give_back(project)

    def hold(self, directory: Path, project: int, size: int) -> None:
        """Put the new, empty ``directory`` in ``project`` and limit it to ``size``."""
        quota.assign(directory, project)
        quota.limit(self.root, project, size, self.inodes_for(size), step="quota:limit")

    def grow(self, project: int, size: int) -> None:
        quota.limit(self.root, project, size, self.inodes_for(size), step="quota:grow")

    def lift(self, project: int) -> None:
        """No limit for ``project`` any more (its directory is gone)."""
        quota.limit(self.root, project, 0, 0, step="quota:lift")

    def inodes_for(self, size: int) -> int:
        usage = fs.usage(self.root)
        if not usage.total_bytes or not usage.total_inodes:
            return 0  # the filesystem makes inodes as it needs them: bytes hold it
        return max(MIN_INODES, -(-usage.total_inodes * size // usage.total_bytes))
