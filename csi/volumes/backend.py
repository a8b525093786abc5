"""What a kind of volume does, and what the rest of the driver may know about it.

There are three kinds: a directory (csi.volumes.directory), a loop image holding a filesystem
(csi.volumes.loop) and a loop image handed over as a raw block device
(csi.volumes.loop_block). Each is a `Backend`: the manager (csi.volumes.manager) writes the
records and calls the backend for the host's part of every step, and never asks which kind
it holds. Code that only needs to know something about a kind (sizing rules, whether the
node must grow a filesystem, where a snapshot's copy lives) reads its `KindFacts`, chosen
here, once, by `facts_for`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from csi.config import MIB
from csi.host.fs import Usage
from csi.host.mkfs import MIN_FS_SIZE
from csi.layout import IMAGE_SUFFIX
from csi.state.records import AccessType, VolumeKind, VolumeRecord


class Promise(enum.Enum):
    """What of a volume's size the disk must keep room for (unless --overcommit): its size
    less what it already takes."""

    IMAGE = "image"  # a sparse image file: less its allocated blocks
    PROJECT = "project"  # held by a project quota when its record names one: less the
    # project's charge; a volume without one is sized in its record only and promises nothing


@dataclass(frozen=True, eq=False)
class KindFacts:
    """The rules of one kind of volume, known without touching the host."""

    name: str
    data_noun: str  # what holds the volume's data, as a user reads it in a message
    content_suffix: str  # the suffix of a snapshot's copy of such a volume
    size_alignment: int  # sizes are whole multiples of this
    minimum_sizes: Mapping[str, int]  # the smallest size, by filesystem type ("" for none)
    promise: Promise  # how much of its size a volume may still take from the disk
    loop_device: bool  # the data is reached through a loop device
    staged_by_device: bool  # staging mounts nothing: the attached device is the stage
    staging_mount: bool  # staging mounts the volume's filesystem at the staging path
    node_expansion_required: bool  # after the size grows, the node grows a filesystem

    def minimum_size(self, fs_type: str) -> int:
        return self.minimum_sizes[fs_type]


DIRECTORY = KindFacts(
    name="directory",
    data_noun="data directory",
    content_suffix=".dir",
    size_alignment=1,
    minimum_sizes={"": 1},
    promise=Promise.PROJECT,
    loop_device=False,
    staged_by_device=False,
    staging_mount=False,  # publishing binds the directory itself; staging is a record
    node_expansion_required=False,
)
LOOP_FILESYSTEM = KindFacts(
    name="loop-filesystem",
    data_noun="backing image file",
    content_suffix=IMAGE_SUFFIX,
    size_alignment=MIB,  # loop images are whole mebibytes
    minimum_sizes=MIN_FS_SIZE,
    promise=Promise.IMAGE,
    loop_device=True,
    staged_by_device=False,
    staging_mount=True,
    node_expansion_required=True,
)
LOOP_BLOCK = KindFacts(
    name="loop-block",
    data_noun="backing image file",
    content_suffix=IMAGE_SUFFIX,
    size_alignment=MIB,
    minimum_sizes={"": MIB},
    promise=Promise.IMAGE,
    loop_device=True,
    staged_by_device=True,
    staging_mount=False,
    node_expansion_required=False,
)
_BY_KIND = {
    (VolumeKind.DIRECTORY, AccessType.MOUNT): DIRECTORY,
    (VolumeKind.LOOP, AccessType.MOUNT): LOOP_FILESYSTEM,
    (VolumeKind.LOOP, AccessType.BLOCK): LOOP_BLOCK,
}


class Kinded(Protocol):
    """Anything that says which kind of volume it is: a spec, a volume or snapshot record."""

    @property
    def kind(self) -> VolumeKind: ...

    @property
    def access_type(self) -> AccessType: ...


def facts_for(of: Kinded) -> KindFacts:
    """The one place a volume's kind and access type select what it is."""
    try:
        return _BY_KIND[(of.kind, of.access_type)]
    except KeyError:
        # Specs refuse the combination at the edge, so only a hand-edited record gets here.
        raise ValueError(f"no {of.access_type.value} access for {of.kind.value} volumes") from None


class Backend(Protocol):
    """The host's side of each step of a volume's life, for one kind of volume.

    Every method is idempotent: a retry after a crash at any step finds the work done or
    redoes it. A failing method undoes what it did itself; the records are the manager's.
    """

    @property
    def facts(self) -> KindFacts: ...

    def path(self, record: VolumeRecord) -> Path:
        """Where the volume's content lives (copied by clones and snapshots)."""
        ...

    def copy_content(self, source: Path, destination: Path) -> None:
        """Copy content of this kind (a volume's or a snapshot's) to a new name."""
        ...

    def project_for_new_volume(self) -> int | None:
        """The project quota ID a new volume's record names (None: not held by one)."""
        ...

    def create(self, record: VolumeRecord, source: Path | None, secret: bytes | None) -> None:
        """Make the volume, empty or as a copy of ``source``; the final name only ever
        holds finished content."""
        ...

    def delete(self, record: VolumeRecord) -> None: ...

    def capacity_on_disk(self, record: VolumeRecord) -> int: ...

    def expand(self, record: VolumeRecord, size: int) -> None:
        """Grow the stored volume to ``size`` bytes (never shrinks)."""
        ...

    def node_expand(self, record: VolumeRecord) -> int:
        """Grow what the node sees to the stored size; returns the usable size."""
        ...

    def stage(
        self,
        record: VolumeRecord,
        staging: Path,
        *,
        read_only: bool,
        flags: list[str],
        secret: bytes | None,
    ) -> None: ...

    def staged_on_host(self, record: VolumeRecord, staging: Path) -> bool:
        """Does the host hold the volume staged at ``staging``?"""
        ...

    def still_in_use(self, record: VolumeRecord) -> bool:
        """Does the host still stage or publish the volume anywhere the record names?"""
        ...

    def unstage(self, record: VolumeRecord, staging: Path) -> None: ...

    def publish(
        self,
        record: VolumeRecord,
        staging: Path,
        target: Path,
        *,
        read_only: bool,
        flags: list[str],
        group: int | None,
    ) -> None: ...

    def unpublish(self, record: VolumeRecord, target: Path) -> None: ...

    def usage(self, record: VolumeRecord, path: Path) -> Usage | int:
        """Filesystem usage at ``path``, or the size in bytes of a raw device."""
        ...

    def freeze_points(self, record: VolumeRecord) -> list[str]:
        """Mount points to freeze while the volume's content is copied."""
        ...
