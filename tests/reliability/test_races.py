"""Races on one volume: serialised or ABORTED, never torn (issue 6, group 5).

Every race starts its calls from separate threads behind a barrier, against the real
in-process gRPC server with real loop devices, ext4 and mounts. After each round the
volume either exists with a record that covers everything on the host, or is entirely
gone: no image, record, mount or loop device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from csi.pb import csi_pb2
from tests.reliability.hostile import EXT4, race
from tests.support.driver import RunningDriver, running_driver
from tests.support.host import loops_under, mounts_under
from tests.support.invariants import check_consistent, no_leftovers, read_record
from tests.support.kubelet import MIB, Kubelet, mount_capability

Code = grpc.StatusCode
ROUNDS = 20
CREATORS = 32


def pair(n: int, first: Callable[[], object], second: Callable[[], object]) -> tuple[Code, Code]:
    """Race two calls; rounds alternate which starts first and by how much (0-12 ms)."""
    stagger = (n // 2 % 5) * 0.003
    if n % 2:
        b, a = race(second, first, stagger=stagger)
    else:
        a, b = race(first, second, stagger=stagger)
    return a, b


@pytest.fixture(autouse=True)
def _no_leaks(tmp_path: Path) -> Iterator[None]:
    with no_leftovers(tmp_path):
        yield


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[RunningDriver]:
    with running_driver(tmp_path / "data", workers=CREATORS + 4) as running:
        yield running


@pytest.fixture
def caller(driver: RunningDriver, tmp_path: Path) -> Kubelet:
    return Kubelet(driver.client, tmp_path / "kubelet", driver.data_dir)


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_creates_of_one_name_make_one_volume(
    driver: RunningDriver, caller: Kubelet, round_: int
) -> None:
    request = csi_pb2.CreateVolumeRequest(
        name=f"pvc-race-{round_}",
        parameters=EXT4,
        capacity_range=csi_pb2.CapacityRange(required_bytes=32 * MIB),
        volume_capabilities=[mount_capability()],
    )
    ids: list[str] = []

    def create() -> None:
        ids.append(driver.client.controller.CreateVolume(request).volume.volume_id)

    codes = race(*[create] * CREATORS)
    assert set(codes) <= {Code.OK, Code.ABORTED}, codes
    assert codes.count(Code.OK) == len(ids) >= 1
    assert len(set(ids)) == 1, f"one name, several IDs: {set(ids)}"
    (volume_id,) = set(ids)
    data = driver.data_dir
    assert sorted(p.name for p in (data / "images").iterdir()) == [f"{volume_id}.img"]
    assert sorted(p.name for p in (data / "state" / "volumes").iterdir()) == [f"{volume_id}.json"]
    listed = driver.client.controller.ListVolumes(csi_pb2.ListVolumesRequest())
    assert [e.volume.volume_id for e in listed.entries] == [volume_id]
    assert not loops_under(data), "creating must not leave a loop device attached"
    caller.delete(volume_id)
    assert not any((data / "images").iterdir())


def test_publish_races_delete_of_a_staged_volume(driver: RunningDriver, caller: Kubelet) -> None:
    volume_id = caller.create("pvc-publish-delete", EXT4)
    staging = caller.staging("publish-delete")
    caller.stage(volume_id, staging)
    outcomes: set[tuple[Code, Code]] = set()
    for n in range(ROUNDS):
        target = caller.target(f"pod-{n}")
        publish, delete = pair(
            n,
            lambda t=target: caller.publish(volume_id, staging, t),  # type: ignore[misc]
            lambda: caller.delete(volume_id),
        )
        outcomes.add((publish, delete))
        assert publish in (Code.OK, Code.ABORTED), f"round {n}: publish {publish}"
        assert delete in (Code.ABORTED, Code.FAILED_PRECONDITION), f"round {n}: delete {delete}"
        assert check_consistent(driver.data_dir, caller.root, volume_id), "staged volume vanished"
        record = read_record(driver.data_dir, volume_id)
        assert record is not None
        assert (str(target) in mounts_under(caller.root)) == (publish is Code.OK)
        assert (str(target) in record["targets"]) == (publish is Code.OK)
        caller.unpublish(volume_id, target)
    caller.unstage(volume_id, staging)
    caller.delete(volume_id)
    assert not check_consistent(driver.data_dir, caller.root, volume_id)
    print(f"publish/delete outcomes: {sorted((a.name, b.name) for a, b in outcomes)}")


def test_stage_races_delete_of_an_unstaged_volume(driver: RunningDriver, caller: Kubelet) -> None:
    outcomes: set[tuple[Code, Code]] = set()
    for n in range(ROUNDS // 2):
        volume_id = caller.create(f"pvc-stage-delete-{n}", EXT4)
        staging = caller.staging(f"stage-delete-{n}")
        stage, delete = pair(
            n,
            lambda v=volume_id, s=staging: caller.stage(v, s),  # type: ignore[misc]
            lambda v=volume_id: caller.delete(v),  # type: ignore[misc]
        )
        outcomes.add((stage, delete))
        allowed = {Code.OK, Code.ABORTED, Code.FAILED_PRECONDITION, Code.NOT_FOUND}
        assert {stage, delete} <= allowed, f"round {n}: stage {stage}, delete {delete}"
        exists = check_consistent(driver.data_dir, caller.root, volume_id)
        assert exists == (delete is not Code.OK), f"round {n}: delete said {delete}"
        if exists:
            caller.unstage(volume_id, staging)
            caller.delete(volume_id)
        assert not check_consistent(driver.data_dir, caller.root, volume_id)
    print(f"stage/delete outcomes: {sorted((a.name, b.name) for a, b in outcomes)}")


def test_stage_races_unstage(driver: RunningDriver, caller: Kubelet) -> None:
    volume_id = caller.create("pvc-stage-unstage", EXT4)
    staging = caller.staging("stage-unstage")
    for n in range(ROUNDS):
        codes = race(
            lambda: caller.stage(volume_id, staging),
            lambda: caller.unstage(volume_id, staging),
            lambda: caller.stage(volume_id, staging),
            lambda: caller.unstage(volume_id, staging),
        )
        assert set(codes) <= {Code.OK, Code.ABORTED}, f"round {n}: {codes}"
        assert check_consistent(driver.data_dir, caller.root, volume_id)
        record = read_record(driver.data_dir, volume_id)
        assert record is not None
        if str(staging) in mounts_under(caller.root):
            assert record["staging_path"] == str(staging)
        caller.unstage(volume_id, staging)
        assert not mounts_under(caller.root), f"round {n}: unstage left a mount"
        assert not loops_under(driver.data_dir), f"round {n}: unstage left a loop device"
    caller.delete(volume_id)


def test_snapshot_races_delete_of_its_source(driver: RunningDriver, caller: Kubelet) -> None:
    snapshots = driver.data_dir / "snapshots"
    outcomes: set[tuple[Code, Code]] = set()
    for n in range(ROUNDS // 2):
        volume_id = caller.create(f"pvc-snap-source-{n}", EXT4)
        taken: list[csi_pb2.Snapshot] = []

        def snapshot(v: str = volume_id, i: int = n, out: list[csi_pb2.Snapshot] = taken) -> None:
            request = csi_pb2.CreateSnapshotRequest(name=f"snap-{i}", source_volume_id=v)
            out.append(driver.client.controller.CreateSnapshot(request).snapshot)

        snap, delete = pair(n, snapshot, lambda v=volume_id: caller.delete(v))  # type: ignore[misc]
        outcomes.add((snap, delete))
        assert snap in (Code.OK, Code.ABORTED, Code.NOT_FOUND), f"round {n}: snapshot {snap}"
        assert delete in (Code.OK, Code.ABORTED), f"round {n}: delete {delete}"
        assert Code.OK in (snap, delete), f"round {n}: both calls aborted"
        exists = check_consistent(driver.data_dir, caller.root, volume_id)
        assert exists == (delete is not Code.OK)
        listed = driver.client.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest())
        if snap is Code.OK:
            (made,) = taken
            assert made.ready_to_use
            assert made.source_volume_id == volume_id
            assert [e.snapshot.snapshot_id for e in listed.entries] == [made.snapshot_id]
            assert (snapshots / f"{made.snapshot_id}.img").is_file()
            driver.client.controller.DeleteSnapshot(
                csi_pb2.DeleteSnapshotRequest(snapshot_id=made.snapshot_id)
            )
        else:
            assert not listed.entries, "a failed snapshot left a record"
        assert not any(snapshots.iterdir()), "snapshot content left behind"
        if exists:
            caller.delete(volume_id)
        assert not check_consistent(driver.data_dir, caller.root, volume_id)
    print(f"snapshot/delete outcomes: {sorted((a.name, b.name) for a, b in outcomes)}")
