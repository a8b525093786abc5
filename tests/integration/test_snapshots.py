"""Snapshots of real volumes: taken while mounted, restored (also larger), outliving the source."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from csi.pb import csi_pb2
from tests.integration.snapshot_support import GIB, Session, allocated, fs_total, get, put
from tests.support.host import device_size
from tests.support.kubelet import BLOCK, DIRECTORY, EXT4, MIB, XFS, Flavour
from tests.support.prerequisites import need_tool
from tests.support.status import rpc_error, status_of

OLD = b"before the snapshot\n" * 100
NEW = b"AFTER  the snapshot\n" * 100
UNKNOWN_VOLUME = "vol-" + "0" * 32


@pytest.fixture(params=[EXT4, XFS, DIRECTORY, BLOCK], ids=lambda f: f.id)
def flavour(request: pytest.FixtureRequest) -> Flavour:
    chosen: Flavour = request.param
    if chosen.fs_type == "xfs":
        need_tool("mkfs.xfs")
    return chosen


def check_size(flavour: Flavour, target: Path) -> None:
    """What a pod sees of a volume restored at twice ``flavour.size``."""
    larger = 2 * flavour.size
    if flavour.block:
        assert device_size(target) == larger
    elif flavour.fs_type:
        total = fs_total(target)
        assert flavour.size < total <= larger, f"filesystem spans {total} bytes"
        assert total >= 0.85 * larger, f"filesystem spans {total} bytes"


def test_snapshot_restore_and_outlive_source(session: Session, flavour: Flavour) -> None:
    source = session.create("origin", flavour)
    target = session.mount(source, flavour)
    put(target, flavour, OLD)

    # Taken while staged and published: the filesystem is frozen, unsynced data included.
    snap = session.snapshot("snap-1", source)
    assert snap.source_volume_id == source
    assert snap.ready_to_use
    assert snap.size_bytes == flavour.size
    put(target, flavour, NEW)
    assert get(target, flavour, len(NEW)) == NEW
    session.unmount(source, target)

    restored = session.create_response("restored", flavour, snapshot_id=snap.snapshot_id)
    assert restored.content_source.snapshot.snapshot_id == snap.snapshot_id
    assert restored.capacity_bytes == flavour.size
    view = session.mount(restored.volume_id, flavour)
    assert get(view, flavour, len(OLD)) == OLD, "the restored volume must hold the old data"
    session.unmount(restored.volume_id, view)

    larger = session.create_response(
        "restored-larger", flavour, size=2 * flavour.size, snapshot_id=snap.snapshot_id
    )
    assert larger.capacity_bytes == 2 * flavour.size
    view = session.mount(larger.volume_id, flavour)
    assert get(view, flavour, len(OLD)) == OLD
    check_size(flavour, view)
    put(view, flavour, b"room to grow" * 1000)
    session.unmount(larger.volume_id, view)

    # The snapshot does not depend on its source.
    session.delete(source)
    assert session.snapshot_file(snap.snapshot_id) is not None
    got = session.controller.GetSnapshot(csi_pb2.GetSnapshotRequest(snapshot_id=snap.snapshot_id))
    assert got.snapshot.source_volume_id == source
    orphan = session.create("restored-orphan", flavour, snapshot_id=snap.snapshot_id)
    view = session.mount(orphan, flavour)
    assert get(view, flavour, len(OLD)) == OLD


@pytest.mark.parametrize("flavour", [EXT4, XFS], ids=lambda f: f.id)
def test_restore_while_source_still_mounted(session: Session, flavour: Flavour) -> None:
    """Both mounted at once: a restored xfs carries its source's UUID (mounted nouuid)."""
    need_tool(f"mkfs.{flavour.fs_type}")
    source = session.create("busy", flavour)
    target = session.mount(source, flavour)
    put(target, flavour, OLD)
    snap = session.snapshot("busy-snap", source)
    put(target, flavour, NEW)
    restored = session.create("busy-restored", flavour, snapshot_id=snap.snapshot_id)
    view = session.mount(restored, flavour)
    assert get(view, flavour, len(OLD)) == OLD
    assert get(target, flavour, len(NEW)) == NEW


def test_create_snapshot_idempotency_and_errors(session: Session) -> None:
    first = session.create("first", DIRECTORY)
    second = session.create("second", DIRECTORY)
    snap = session.snapshot("nightly", first)
    again = session.snapshot("nightly", first)
    assert again.snapshot_id == snap.snapshot_id
    assert again.creation_time == snap.creation_time

    code = status_of(lambda: session.snapshot("nightly", second))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert status_of(lambda: session.snapshot("ghost", UNKNOWN_VOLUME)) == grpc.StatusCode.NOT_FOUND
    listed = session.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest())
    assert [e.snapshot.snapshot_id for e in listed.entries] == [snap.snapshot_id]


def test_list_get_and_delete_snapshots(session: Session) -> None:
    controller = session.controller
    a = session.create("list-a", DIRECTORY)
    b = session.create("list-b", DIRECTORY)
    made = {session.snapshot(f"s{i}", a if i < 3 else b).snapshot_id: i for i in range(5)}
    of_a = {s for s, i in made.items() if i < 3}

    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = controller.ListSnapshots(
            csi_pb2.ListSnapshotsRequest(max_entries=2, starting_token=token)
        )
        assert len(page.entries) <= 2
        seen += [e.snapshot.snapshot_id for e in page.entries]
        token = page.next_token
        if not token:
            break
    assert sorted(seen) == sorted(made), "every snapshot exactly once across the pages"

    by_source = controller.ListSnapshots(csi_pb2.ListSnapshotsRequest(source_volume_id=a))
    assert {e.snapshot.snapshot_id for e in by_source.entries} == of_a
    one = next(iter(of_a))
    by_id = controller.ListSnapshots(csi_pb2.ListSnapshotsRequest(snapshot_id=one))
    assert [e.snapshot.snapshot_id for e in by_id.entries] == [one]
    both = csi_pb2.ListSnapshotsRequest(snapshot_id=one, source_volume_id=b)
    assert list(controller.ListSnapshots(both).entries) == []

    got = controller.GetSnapshot(csi_pb2.GetSnapshotRequest(snapshot_id=one)).snapshot
    assert got.snapshot_id == one
    assert got.source_volume_id == a
    assert got.ready_to_use
    assert got.creation_time.seconds > 0

    content = session.snapshot_file(one)
    assert content is not None
    assert content.is_dir()
    session.delete_snapshot(one)
    assert not content.exists(), "DeleteSnapshot must remove the snapshot's content"
    assert session.snapshot_file(one) is None
    session.delete_snapshot(one)  # idempotent
    code = status_of(lambda: controller.GetSnapshot(csi_pb2.GetSnapshotRequest(snapshot_id=one)))
    assert code == grpc.StatusCode.NOT_FOUND
    remaining = controller.ListSnapshots(csi_pb2.ListSnapshotsRequest())
    assert sorted(e.snapshot.snapshot_id for e in remaining.entries) == sorted(set(made) - {one})


def test_restore_refuses_wrong_kind_and_small_limit(session: Session) -> None:
    directory = session.create("dir-source", DIRECTORY)
    dir_snap = session.snapshot("dir-snap", directory)
    error = rpc_error(lambda: session.create("as-loop", EXT4, snapshot_id=dir_snap.snapshot_id))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    loop = session.create("loop-source", EXT4)
    loop_snap = session.snapshot("loop-snap", loop)
    error = rpc_error(
        lambda: session.create_response(
            "too-small", EXT4, size=16 * MIB, limit=32 * MIB, snapshot_id=loop_snap.snapshot_id
        )
    )
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE
    images = sorted(p.name for p in (session.kubelet.data_dir / "images").iterdir())
    assert images == [f"{loop}.img"], "a refused restore must leave no image behind"


def test_snapshot_copy_is_sparse(session: Session) -> None:
    big = Flavour("ext4-1g", EXT4.params, GIB, fs_type="ext4")
    source = session.create("big", big)
    target = session.mount(source, big)
    put(target, big, os.urandom(4 * MIB))
    snap = session.snapshot("big-snap", source)
    content = session.snapshot_file(snap.snapshot_id)
    assert content is not None
    assert content.stat().st_size == GIB
    used = allocated(content)
    assert used < GIB // 8, f"the snapshot of a 1 GiB volume occupies {used} bytes"
    assert used <= allocated(session.kubelet.image(source)) + MIB
    assert content.suffix == ".img"
    session.delete_snapshot(snap.snapshot_id)
    assert not content.exists(), "DeleteSnapshot must remove the image copy"


def test_restore_is_idempotent_per_name_and_source(session: Session) -> None:
    source = session.create("idem-source", DIRECTORY)
    one = session.snapshot("idem-1", source).snapshot_id
    two = session.snapshot("idem-2", source).snapshot_id
    restored = session.create("idem-restored", DIRECTORY, snapshot_id=one)
    assert session.create("idem-restored", DIRECTORY, snapshot_id=one) == restored
    for retry in (
        lambda: session.create("idem-restored", DIRECTORY, snapshot_id=two),
        lambda: session.create("idem-restored", DIRECTORY),
    ):
        assert status_of(retry) == grpc.StatusCode.ALREADY_EXISTS
