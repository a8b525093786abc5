"""csi.volumes.backend: one backend per kind of volume, chosen once from kind and access type."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

from csi.config import MIB
from csi.host.mkfs import MIN_FS_SIZE
from csi.layout import Layout
from csi.state.records import AccessType, Phase, VolumeKind, VolumeRecord, VolumeSpec
from csi.state.store import StateStore
from csi.volumes import health
from csi.volumes.backend import (
    DIRECTORY,
    LOOP_BLOCK,
    LOOP_FILESYSTEM,
    KindFacts,
    Promise,
    facts_for,
)
from csi.volumes.directory import DirectoryBackend
from csi.volumes.loop import LoopFilesystemBackend
from csi.volumes.loop_block import LoopBlockBackend
from csi.volumes.manager import Volumes

KINDS = [
    (VolumeKind.DIRECTORY, AccessType.MOUNT, "", DIRECTORY, DirectoryBackend),
    (VolumeKind.LOOP, AccessType.MOUNT, "ext4", LOOP_FILESYSTEM, LoopFilesystemBackend),
    (VolumeKind.LOOP, AccessType.BLOCK, "", LOOP_BLOCK, LoopBlockBackend),
]


@pytest.fixture
def volumes(tmp_path: Path) -> Volumes:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    return Volumes(layout, StateStore(layout))


def record(
    kind: VolumeKind, access: AccessType, fs_type: str = "", size: int = MIB
) -> VolumeRecord:
    return VolumeRecord("vol-1", "pvc-1", VolumeSpec(kind, access, fs_type), size, 0.0, Phase.READY)


@pytest.mark.parametrize(("kind", "access", "fs_type", "facts", "backend_type"), KINDS)
def test_one_backend_per_kind(
    volumes: Volumes,
    kind: VolumeKind,
    access: AccessType,
    fs_type: str,
    facts: KindFacts,
    backend_type: type,
) -> None:
    spec = VolumeSpec(kind, access, fs_type)
    assert facts_for(spec) is facts
    assert facts_for(record(kind, access, fs_type)) is facts
    chosen = volumes.backend(spec)
    assert isinstance(chosen, backend_type)
    assert chosen.facts is facts
    assert volumes.backend(record(kind, access, fs_type)) is chosen  # made once, reused


def test_directory_block_has_no_backend(volumes: Volumes) -> None:
    with pytest.raises(ValueError, match="no block access for directory volumes"):
        facts_for(VolumeSpec(VolumeKind.DIRECTORY, AccessType.BLOCK, ""))


def test_facts_of_each_kind() -> None:
    assert DIRECTORY.minimum_size("") == 1
    assert DIRECTORY.size_alignment == 1
    assert LOOP_FILESYSTEM.minimum_size("xfs") == MIN_FS_SIZE["xfs"]
    assert LOOP_BLOCK.minimum_size("") == MIB == LOOP_BLOCK.size_alignment
    # Only a formatted loop volume needs the node to grow what it sees.
    assert [f.node_expansion_required for f in (DIRECTORY, LOOP_FILESYSTEM, LOOP_BLOCK)] == [
        False,
        True,
        False,
    ]
    # Loop images promise their size less their blocks; directories, when held by a quota.
    assert [f.promise for f in (DIRECTORY, LOOP_FILESYSTEM, LOOP_BLOCK)] == [
        Promise.PROJECT,
        Promise.IMAGE,
        Promise.IMAGE,
    ]
    assert [f.staged_by_device for f in (DIRECTORY, LOOP_FILESYSTEM, LOOP_BLOCK)] == [
        False,
        False,
        True,
    ]
    assert {f.content_suffix for f in (LOOP_FILESYSTEM, LOOP_BLOCK)} == {".img"}
    assert DIRECTORY.content_suffix == ".dir"


def test_both_loop_backends_share_one_attach_lock(volumes: Volumes) -> None:
    filesystem = volumes.backend(VolumeSpec(VolumeKind.LOOP, AccessType.MOUNT, "ext4"))
    block = volumes.backend(VolumeSpec(VolumeKind.LOOP, AccessType.BLOCK, ""))
    assert isinstance(filesystem, LoopFilesystemBackend)
    assert isinstance(block, LoopBlockBackend)
    assert filesystem._images is block._images


def test_directory_backend_lifecycle_on_disk(volumes: Volumes) -> None:
    """Create, copy, grow and delete a directory volume: no root, no mounts needed."""
    rec = record(VolumeKind.DIRECTORY, AccessType.MOUNT)
    backend = volumes.backend(rec)
    backend.create(rec, None, None)
    path = backend.path(rec)
    # No access for "other": a pod's fsGroup gets the group bits at publish.
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o2770
    (path / "file").write_text("data")
    os.chmod(path, 0o777)  # as an older driver made it
    clone = rec.with_changes(volume_id="vol-2")
    backend.create(clone, path, None)
    assert (backend.path(clone) / "file").read_text() == "data"
    # A copy keeps its source's modes, less the root's "other" bits.
    assert stat.S_IMODE(os.stat(backend.path(clone)).st_mode) == 0o770
    backend.expand(rec, 2 * MIB)  # recorded, not enforced: nothing on disk changes
    assert backend.node_expand(rec.with_changes(capacity_bytes=2 * MIB)) == 2 * MIB
    assert backend.capacity_on_disk(rec) == MIB
    assert backend.freeze_points(rec) == []
    assert backend.still_in_use(rec) is False
    backend.delete(rec)
    assert not path.exists()
    assert backend.path(clone).exists()


def test_health_names_what_is_missing(volumes: Volumes) -> None:
    directory = record(VolumeKind.DIRECTORY, AccessType.MOUNT)
    assert "data directory" in health.check(volumes, directory).message
    image = record(VolumeKind.LOOP, AccessType.BLOCK)
    assert "backing image file" in health.check(volumes, image).message


def test_manager_never_branches_on_kind() -> None:
    """The manager keeps the records' choreography; what differs per kind is the backend's."""
    source = Path(__file__).parents[2] / "csi" / "volumes" / "manager.py"
    tree = ast.parse(source.read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"VolumeKind", "AccessType"}
    for compare in (n for n in ast.walk(tree) if isinstance(n, ast.Compare)):
        sides = [compare.left, *compare.comparators]
        compared = {s.attr for s in sides if isinstance(s, ast.Attribute)}
        assert not compared & {"kind", "access_type"}, ast.unparse(compare)
