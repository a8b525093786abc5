"""Clones: a new volume from another volume's content, taken while the source is in use."""

from __future__ import annotations

import grpc
import pytest

from tests.integration.snapshot_support import Session, get, put
from tests.support.host import loops_for
from tests.support.kubelet import BLOCK, DIRECTORY, EXT4, XFS, Flavour
from tests.support.prerequisites import need_tool
from tests.support.status import rpc_error

ORIGINAL = b"written to the source before cloning\n" * 50
CLONE_ONLY = b"written to the clone only, never seen by the source\n" * 50
LATER = b"written to the source after cloning, never seen by clone\n" * 50


@pytest.mark.parametrize(
    "flavour",
    [EXT4, XFS, DIRECTORY, BLOCK],
    ids=lambda f: f.id,
)
def test_clone_of_mounted_volume(session: Session, flavour: Flavour) -> None:
    if flavour.fs_type:
        need_tool(f"mkfs.{flavour.fs_type}")
    source = session.create("source", flavour)
    source_target = session.mount(source, flavour)
    put(source_target, flavour, ORIGINAL)  # not fsynced: the clone must freeze and flush

    clone = session.create_response("clone", flavour, source_volume_id=source)
    assert clone.volume_id != source
    assert clone.content_source.volume.volume_id == source
    assert clone.capacity_bytes == flavour.size
    if flavour.fs_type or flavour.block:
        assert loops_for(session.kubelet.image(clone.volume_id)) == []

    # Both in use at once, on the same node, the way two pods would use them
    # (an xfs clone carries its source's UUID: the driver must mount it nouuid).
    clone_target = session.mount(clone.volume_id, flavour)
    assert get(clone_target, flavour, len(ORIGINAL)) == ORIGINAL
    put(clone_target, flavour, CLONE_ONLY)
    put(source_target, flavour, LATER)
    assert get(source_target, flavour, len(LATER)) == LATER
    assert get(clone_target, flavour, len(CLONE_ONLY)) == CLONE_ONLY

    # And the same from the disk, after both are unmounted and mounted again.
    session.unmount(clone.volume_id, clone_target)
    session.unmount(source, source_target)
    source_target = session.mount(source, flavour, pod="again-source")
    assert get(source_target, flavour, len(LATER)) == LATER
    session.unmount(source, source_target)
    clone_target = session.mount(clone.volume_id, flavour, pod="again-clone")
    assert get(clone_target, flavour, len(CLONE_ONLY)) == CLONE_ONLY


def test_clone_survives_deleting_its_source(session: Session) -> None:
    source = session.create("parent", EXT4)
    target = session.mount(source, EXT4)
    put(target, EXT4, ORIGINAL)
    clone = session.create("child", EXT4, source_volume_id=source)
    session.unmount(source, target)
    session.delete(source)
    assert not session.kubelet.image(source).exists()
    view = session.mount(clone, EXT4)
    assert get(view, EXT4, len(ORIGINAL)) == ORIGINAL


def test_clone_into_larger_volume(session: Session) -> None:
    source = session.create("small", EXT4)
    target = session.mount(source, EXT4)
    put(target, EXT4, ORIGINAL)
    clone = session.create_response("bigger", EXT4, size=2 * EXT4.size, source_volume_id=source)
    assert clone.capacity_bytes == 2 * EXT4.size
    assert session.kubelet.image(clone.volume_id).stat().st_size == 2 * EXT4.size


def test_clone_errors(session: Session) -> None:
    error = rpc_error(lambda: session.create("orphan", EXT4, source_volume_id="vol-" + "f" * 32))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert list((session.kubelet.data_dir / "images").iterdir()) == []

    directory = session.create("a-directory", DIRECTORY)
    error = rpc_error(lambda: session.create("loop-from-dir", EXT4, source_volume_id=directory))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = rpc_error(
        lambda: session.create_response(
            "limited", DIRECTORY, size=1, limit=DIRECTORY.size // 2, source_volume_id=directory
        )
    )
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE
