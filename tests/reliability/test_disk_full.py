"""Disk full: a small, real data root (a 64 MiB ext4 on a loop device) that runs out of space.

Every call that does not fit must answer RESOURCE_EXHAUSTED (never INTERNAL or UNKNOWN),
leave nothing half-made behind and keep earlier volumes' records intact; once space is
freed, the same calls succeed.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from csi.pb import csi_pb2
from csi.state.records import Phase, VolumeRecord
from tests.support.driver import DriverProcess
from tests.support.host import is_frozen, loops_under, mounts_under
from tests.support.invariants import assert_consistent, clean_up_host, scratch_files
from tests.support.kubelet import DIRECTORY, MIB, Flavour
from tests.support.status import rpc_error

EXT4 = Flavour("ext4", {"volumeType": "loop", "fsType": "ext4"}, 16 * MIB, fs_type="ext4")
ROOT_SIZE = 64 * MIB
# What fill() writes rather than allocates: the tail, where the last blocks run out.
FILL_BY_WRITING = 4 * MIB


def run(*argv: str) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout.strip()


@contextmanager
def ext4_root(tmp_path: Path, size: int, name: str) -> Iterator[Path]:
    """An ext4 of ``size`` bytes (no blocks reserved for root) mounted at tmp_path/name;
    afterwards, volume mounts and loop devices left on it are reported as leaks, after
    everything (the root included) is cleaned up."""
    image, mount_point = tmp_path / f"{name}.img", tmp_path / name
    with image.open("wb") as fh:
        fh.truncate(size)
    run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
    device = run("losetup", "--find", "--show", str(image))
    mount_point.mkdir()
    run("mount", "-t", "ext4", device, str(mount_point))
    try:
        yield mount_point
    finally:
        # Volume mounts and devices on the root would keep it busy: any left is a leak.
        leaked = mounts_under(tmp_path / "kubelet") + loops_under(mount_point)
        clean_up_host(tmp_path)
        assert leaked == [], f"test left behind: {leaked}"
        assert loops_under(tmp_path) == [], "the root still attached"


@contextmanager
def driver_on(root: Path, tmp_path: Path, fault: str = "") -> Iterator[DriverProcess]:
    """A started driver whose data root is on ``root``; killed afterwards."""
    process = DriverProcess(root / "data", tmp_path / "logs", tmp_path / "kubelet")
    process.start(fault=fault)
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
def small_root(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB ext4 mounted at tmp_path/smallroot."""
    with ext4_root(tmp_path, ROOT_SIZE, "smallroot") as root:
        yield root


@pytest.fixture
def driver(small_root: Path, tmp_path: Path) -> Iterator[DriverProcess]:
    with driver_on(small_root, tmp_path) as process:
        yield process


def free_bytes(path: Path) -> int:
    os.sync()
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(root: Path, leave: int = 0) -> Path:
    """Take every free block with a filler file, then give back ``leave`` bytes. Most of
    the room is allocated without writing it (taken blocks all the same, in a fraction of
    the time), the last megabytes are written until ENOSPC."""
    filler = root / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        room = os.statvfs(root)
        bulk = room.f_bavail * room.f_frsize - FILL_BY_WRITING
        if bulk > 0:
            os.posix_fallocate(fd, 0, bulk)
        for size in (MIB, 64 * 1024, 4096, 1024):
            chunk = b"\xa5" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        os.fsync(fd)
        if leave:
            os.ftruncate(fd, os.fstat(fd).st_size - leave)
            os.fsync(fd)
    finally:
        os.close(fd)
    return filler


def create(driver: DriverProcess, name: str, flavour: Flavour, size: int = 0) -> str:
    request = csi_pb2.CreateVolumeRequest(
        name=name,
        parameters=dict(flavour.params),
        capacity_range=csi_pb2.CapacityRange(required_bytes=size or flavour.size),
        volume_capabilities=[flavour.cap()],
    )
    return str(driver.client.controller.CreateVolume(request).volume.volume_id)


def assert_exhausted(call: object) -> None:
    error = rpc_error(call)  # type: ignore[arg-type]
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (error.code(), error.details())


def records(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (data_dir / "state" / "volumes").iterdir()}


def assert_nothing_half_made(driver: DriverProcess, before: dict[str, bytes]) -> None:
    data_dir = driver.data_dir
    assert scratch_files(data_dir) == []
    assert records(data_dir) == before, "records changed by a failed create"
    for raw in before.values():
        assert VolumeRecord.from_json(json.loads(raw)).phase is Phase.READY
    known = {name.removesuffix(".json") for name in before}
    on_disk = {p.name.removesuffix(".img") for p in (data_dir / "images").iterdir()}
    on_disk |= {p.name for p in (data_dir / "volumes").iterdir()}
    assert on_disk <= known, f"artefacts of failed creates: {on_disk - known}"


def test_volume_larger_than_the_free_space(driver: DriverProcess) -> None:
    assert_exhausted(lambda: create(driver, "too-big", EXT4, 2 * ROOT_SIZE))
    assert_exhausted(lambda: create(driver, "too-big-dir", DIRECTORY, 2 * ROOT_SIZE))
    assert_nothing_half_made(driver, {})
    assert list((driver.data_dir / "images").iterdir()) == []
    assert driver.stop() == 0


# Free blocks left after filling: with none the capacity check refuses; with one the
# 'creating' record fits and the directory does not; with two only the final record fails.
@pytest.mark.parametrize(
    "left_blocks",
    [0, 1, 2],
)
def test_full_root_refuses_new_volumes(
    driver: DriverProcess, small_root: Path, left_blocks: int
) -> None:
    earlier_dir = create(driver, "earlier-dir", DIRECTORY)
    earlier_loop = create(driver, "earlier-loop", EXT4)
    before = records(driver.data_dir)
    block = os.statvfs(small_root).f_frsize
    filler = fill(small_root, leave=left_blocks * block)

    assert_exhausted(lambda: create(driver, "late-dir", DIRECTORY, 1))
    assert_nothing_half_made(driver, before)
    assert_exhausted(lambda: create(driver, "late-loop", EXT4))
    assert_nothing_half_made(driver, before)

    assert driver.stop() == 0  # the earlier records still load after a restart
    driver.start()
    listed = driver.client.controller.ListVolumes(csi_pb2.ListVolumesRequest())
    assert sorted(e.volume.volume_id for e in listed.entries) == sorted([earlier_dir, earlier_loop])

    filler.unlink()
    late = [create(driver, "late-dir", DIRECTORY, 1), create(driver, "late-loop", EXT4)]
    assert_consistent(driver.data_dir, driver.kubelet_root)
    for volume_id in [earlier_dir, earlier_loop, *late]:
        driver.kubelet.delete(volume_id)
    assert records(driver.data_dir) == {}
    assert driver.stop() == 0


def test_snapshot_that_does_not_fit(driver: DriverProcess, small_root: Path) -> None:
    kubelet = driver.kubelet
    volume_id = create(driver, "busy", Flavour("ext4-32", EXT4.params, 32 * MIB, "ext4"))
    staging, target = kubelet.staging(volume_id), kubelet.target("pod")
    kubelet.stage(volume_id, staging, EXT4.cap())
    kubelet.publish(volume_id, staging, target, EXT4.cap())
    data = os.urandom(12 * MIB)
    (target / "data").write_bytes(data)
    os.sync()
    filler = fill(small_root, leave=2 * MIB)
    volume_records = records(driver.data_dir)

    request = csi_pb2.CreateSnapshotRequest(name="too-big-to-copy", source_volume_id=volume_id)
    assert_exhausted(lambda: driver.client.controller.CreateSnapshot(request))
    assert list((driver.data_dir / "snapshots").iterdir()) == [], "half-made snapshot"
    assert list((driver.data_dir / "state" / "snapshots").iterdir()) == []
    assert records(driver.data_dir) == volume_records
    assert not is_frozen(staging), "source filesystem left frozen"
    listed = driver.client.controller.ListSnapshots(csi_pb2.ListSnapshotsRequest())
    assert list(listed.entries) == []

    filler.unlink()
    (target / "after").write_text("writable")
    snapshot = driver.client.controller.CreateSnapshot(request).snapshot
    assert snapshot.ready_to_use
    assert (target / "data").read_bytes() == data
    assert_consistent(driver.data_dir, driver.kubelet_root)
    controller = driver.client.controller
    controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id))
    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)
    assert driver.stop() == 0


# A directory snapshot of one small file needs a block for the record, one for the
# directory, one for the file and one for the settled record.
@pytest.mark.parametrize(
    "left_blocks",
    [0, 1, 2, 3],
)
def test_directory_snapshot_on_a_full_root(
    driver: DriverProcess, small_root: Path, left_blocks: int
) -> None:
    volume_id = create(driver, "tree", DIRECTORY)
    (driver.data_dir / "volumes" / volume_id / "file").write_bytes(b"tree data")
    filler = fill(small_root, leave=left_blocks * os.statvfs(small_root).f_frsize)
    controller = driver.client.controller
    request = csi_pb2.CreateSnapshotRequest(name="tree-snap", source_volume_id=volume_id)
    assert_exhausted(lambda: controller.CreateSnapshot(request))
    assert list((driver.data_dir / "snapshots").iterdir()) == [], "half-made snapshot"
    assert list((driver.data_dir / "state" / "snapshots").iterdir()) == [], "snapshot record"

    filler.unlink()
    snapshot = controller.CreateSnapshot(request).snapshot
    content = driver.data_dir / "snapshots" / f"{snapshot.snapshot_id}.dir" / "file"
    assert content.read_bytes() == b"tree data"
    controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id))
    driver.kubelet.delete(volume_id)
    assert_consistent(driver.data_dir, driver.kubelet_root)
    assert driver.stop() == 0


def test_directory_clone_on_a_full_root(driver: DriverProcess, small_root: Path) -> None:
    source = create(driver, "clone-source", DIRECTORY, 1)
    (driver.data_dir / "volumes" / source / "file").write_bytes(b"tree data")
    before = records(driver.data_dir)
    filler = fill(small_root, leave=2 * os.statvfs(small_root).f_frsize)
    request = csi_pb2.CreateVolumeRequest(
        name="clone",
        parameters=dict(DIRECTORY.params),
        capacity_range=csi_pb2.CapacityRange(required_bytes=1),
        volume_capabilities=[DIRECTORY.cap()],
        volume_content_source=csi_pb2.VolumeContentSource(
            volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=source)
        ),
    )
    assert_exhausted(lambda: driver.client.controller.CreateVolume(request))
    assert_nothing_half_made(driver, before)
    filler.unlink()
    clone = driver.client.controller.CreateVolume(request).volume.volume_id
    assert (driver.data_dir / "volumes" / clone / "file").read_bytes() == b"tree data"
    for volume_id in (clone, source):
        driver.kubelet.delete(volume_id)
    assert driver.stop() == 0
