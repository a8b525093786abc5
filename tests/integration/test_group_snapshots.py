"""Group snapshots: several mounted volumes captured together, restored one by one."""

from __future__ import annotations

import grpc

from csi.pb import csi_pb2
from tests.integration.snapshot_support import Session, get, put
from tests.support.kubelet import EXT4
from tests.support.status import rpc_error, status_of

DATA = {"db": b"database pages\n" * 300, "wal": b"write-ahead log\n" * 300}
LATER = b"changed after the group snapshot\n" * 300


def create_group(session: Session, name: str, sources: list[str]) -> csi_pb2.VolumeGroupSnapshot:
    request = csi_pb2.CreateVolumeGroupSnapshotRequest(name=name, source_volume_ids=sources)
    group: csi_pb2.VolumeGroupSnapshot = session.groups.CreateVolumeGroupSnapshot(
        request
    ).group_snapshot
    session.later(lambda: delete_group(session, group.group_snapshot_id))
    return group


def delete_group(session: Session, group_id: str) -> None:
    request = csi_pb2.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=group_id)
    session.groups.DeleteVolumeGroupSnapshot(request)


def get_group(session: Session, group_id: str) -> csi_pb2.VolumeGroupSnapshot:
    request = csi_pb2.GetVolumeGroupSnapshotRequest(group_snapshot_id=group_id)
    group: csi_pb2.VolumeGroupSnapshot = session.groups.GetVolumeGroupSnapshot(
        request
    ).group_snapshot
    return group


def listed_ids(session: Session) -> set[str]:
    listed = session.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest())
    return {e.snapshot.snapshot_id for e in listed.entries}


def test_group_snapshot_of_mounted_volumes(session: Session) -> None:
    volumes = {role: session.create(role, EXT4) for role in DATA}
    targets = {role: session.mount(volume, EXT4) for role, volume in volumes.items()}
    for role, target in targets.items():
        put(target, EXT4, DATA[role])  # unsynced: the group freeze must flush both

    group = create_group(session, "nightly", list(volumes.values()))
    assert group.ready_to_use
    assert group.group_snapshot_id
    members = {s.source_volume_id: s for s in group.snapshots}
    assert set(members) == set(volumes.values()), "one snapshot per source volume"
    for snapshot in members.values():
        assert snapshot.group_snapshot_id == group.group_snapshot_id
        assert snapshot.ready_to_use
        assert session.snapshot_file(snapshot.snapshot_id) is not None
    assert len({s.snapshot_id for s in members.values()}) == len(volumes)

    again = create_group(session, "nightly", list(reversed(volumes.values())))
    assert again.group_snapshot_id == group.group_snapshot_id
    fetched = get_group(session, group.group_snapshot_id)
    assert {s.snapshot_id for s in fetched.snapshots} == {s.snapshot_id for s in group.snapshots}
    assert fetched.creation_time == group.creation_time
    listed = session.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest())
    in_group = [e.snapshot for e in listed.entries if e.snapshot.group_snapshot_id]
    assert {s.snapshot_id for s in in_group} == {s.snapshot_id for s in group.snapshots}

    for target in targets.values():
        put(target, EXT4, LATER)
    for role, volume in volumes.items():
        session.unmount(volume, targets[role])

    # Each member restores to its own volume's data, as it was at the group's instant.
    for role, volume in volumes.items():
        snapshot_id = members[volume].snapshot_id
        restored = session.create(f"{role}-restored", EXT4, snapshot_id=snapshot_id)
        view = session.mount(restored, EXT4)
        assert get(view, EXT4, len(DATA[role])) == DATA[role], f"{role} restored wrongly"


def test_group_rules_and_deletion(session: Session) -> None:
    first = session.create("first", EXT4)
    second = session.create("second", EXT4)
    group = create_group(session, "pair", [first, second])
    member_ids = [s.snapshot_id for s in group.snapshots]
    files = [session.snapshot_file(s) for s in member_ids]
    assert all(f is not None and f.is_file() for f in files)

    # A member belongs to its group: it cannot be deleted on its own.
    error = rpc_error(lambda: session.delete_snapshot(member_ids[0]))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert session.snapshot_file(member_ids[0]) is not None
    assert set(member_ids) <= listed_ids(session)

    # The same group name for other sources is a different group.
    request = csi_pb2.CreateVolumeGroupSnapshotRequest(name="pair", source_volume_ids=[first])
    code = status_of(lambda: session.groups.CreateVolumeGroupSnapshot(request))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    missing = csi_pb2.CreateVolumeGroupSnapshotRequest(
        name="ghosts", source_volume_ids=[first, "vol-" + "9" * 32]
    )
    code = status_of(lambda: session.groups.CreateVolumeGroupSnapshot(missing))
    assert code == grpc.StatusCode.NOT_FOUND
    assert listed_ids(session) == set(member_ids), "a failed group leaves no snapshots"

    delete_group(session, group.group_snapshot_id)
    assert all(f is not None and not f.exists() for f in files), "member files must go"
    assert listed_ids(session) == set()
    for snapshot_id in member_ids:
        lookup = csi_pb2.GetSnapshotRequest(snapshot_id=snapshot_id)
        code = status_of(lambda r=lookup: session.controller.GetSnapshot(r))
        assert code == grpc.StatusCode.NOT_FOUND
    code = status_of(lambda: get_group(session, group.group_snapshot_id))
    assert code == grpc.StatusCode.NOT_FOUND
    delete_group(session, group.group_snapshot_id)  # idempotent
    assert list((session.kubelet.data_dir / "snapshots").iterdir()) == []
