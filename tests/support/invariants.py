"""What the data root and the test's own host state must look like between operations,
read independently of the driver, and the check that a test left nothing behind.

Records are parsed from disk here (not asked of the driver); mounts and loop devices come
from ``tests.support.host``, only for the test's own paths and images, so neither a driver
bug nor another process on the machine can decide the outcome.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from csi.layout import Layout
from csi.state.records import AccessType, Phase, SnapshotRecord, VolumeKind, VolumeRecord
from csi.state.store import volume_json
from tests.support.host import (
    backing_names_under,
    file_id,
    live,
    loops_backed_by,
    loops_for,
    loops_under,
    mounts_at,
    mounts_of,
    mounts_under,
    sh,
    thaw,
)
from tests.support.prerequisites import need_root

SCRATCH_SUFFIXES = (".partial", ".deleting", ".tmp")
# How long a detached device may take to go once its last lazy unmount is done.
DETACH_WAIT = 15.0


# -- nothing left behind ---------------------------------------------------------------
def leftovers(root: Path) -> tuple[list[str], list[str]]:
    """(mount points, loop devices) under ``root``; a loop counts if its file is under it.
    A loop device whose detach is pending is not the test's any more (``host.live``)."""
    return mounts_under(root), live(loops_under(root))


def clean_up_host(root: Path) -> None:
    """Unmount and detach everything under ``root``, nested loop-on-loop roots included.

    Frozen filesystems are thawed first (an unmount would hang). The loop devices are
    listed first, while their backing paths are still visible (a lazy unmount hides them),
    and unmounts alternate with detaches: a data root on a loop device stays busy until
    the volume devices backed by files on it are detached. Lazy unmounts finish the job.
    """
    for point in mounts_under(root):
        thaw(point)
    devices = loops_under(root)
    for _ in range(5):
        points = sorted(mounts_under(root), key=len, reverse=True)
        if not points and not loops_under(root):
            return
        for point in points:
            sh("umount", "--", point)
        for device in devices:
            sh("losetup", "--detach", device)
    for _ in range(10):
        points = sorted(mounts_under(root), key=len, reverse=True)
        if not points:
            break
        for point in points:
            sh("umount", "-l", "--", point)
    for device in {*devices, *loops_under(root)}:
        sh("losetup", "--detach", device)
    # A device whose filesystem was unmounted lazily is let go once the kernel has finished
    # with it (on a loaded machine, a moment later): wait for that, within a bound, so a
    # check after this reads the outcome, not the moment.
    deadline = time.monotonic() + DETACH_WAIT
    while loops_under(root) and time.monotonic() < deadline:
        time.sleep(0.1)


@contextmanager
def no_leftovers(root: Path) -> Iterator[None]:
    """Needs root; when the block ends no mount and no loop device under ``root`` may
    remain. Leftovers are removed by force before the assertion (and when the block
    fails), so one failing test does not poison the next one or the machine."""
    need_root()
    try:
        yield
    finally:
        leaked_mounts, leaked_loops = leftovers(root)
        clean_up_host(root)
    assert not leaked_mounts, f"test left mounts behind: {leaked_mounts}"
    assert not leaked_loops, f"test left loop devices attached: {leaked_loops}"
    assert leftovers(root) == ([], []), "forced cleanup could not remove everything"


# -- records ---------------------------------------------------------------------------
def volume_records(data_dir: Path) -> list[VolumeRecord]:
    """Every volume record on disk; a record that does not parse fails the test."""
    directory = data_dir / "state" / "volumes"
    layout = Layout(data_dir)
    return [
        VolumeRecord.from_json(volume_json(layout, p.stem) or {})
        for p in sorted(directory.iterdir())
    ]


def snapshot_records(data_dir: Path) -> list[SnapshotRecord]:
    directory = data_dir / "state" / "snapshots"
    return [
        SnapshotRecord.from_json(json.loads(p.read_text())) for p in sorted(directory.iterdir())
    ]


def record_of(data_dir: Path, volume_id: str) -> VolumeRecord | None:
    data = volume_json(Layout(data_dir), volume_id)  # its node-use file laid over it
    return None if data is None else VolumeRecord.from_json(data)


def read_record(data_dir: Path, volume_id: str) -> dict[str, Any] | None:
    """A volume record as the driver reads it (its node-use file laid over it), or None."""
    return volume_json(Layout(data_dir), volume_id)


def image_path(data_dir: Path, volume_id: str) -> Path:
    return data_dir / "images" / f"{volume_id}.img"


def scratch_files(data_dir: Path) -> list[str]:
    return sorted(str(p) for p in data_dir.rglob("*") if p.name.endswith(SCRATCH_SUFFIXES))


def devices_of(image: Path) -> list[str]:
    """The image's loop devices: those backed by its inode, whatever name the kernel shows
    for it (one attached by a driver in another mount namespace reads ``/images/...``), and
    those still named after its path (a deleted image's, which no other file can be);
    devices whose detach is pending left out (``host.live``)."""
    by_id = loops_backed_by(file_id(image), image.name) if image.exists() else []
    return live(sorted({*by_id, *loops_for(image)}))


# -- the invariants --------------------------------------------------------------------
def assert_consistent(
    data_dir: Path, kubelet_root: Path, *, settled: bool = True
) -> list[VolumeRecord]:
    """The invariants every operation must restore, crash or no crash.

    Every record is ready; no scratch file; every image, directory and snapshot belongs to
    a record and back; one mount at most per path; at most one loop device per image, only
    for a staged volume, and a filesystem volume's device is mounted (no idle device).
    ``settled`` (after a completed call): the mounts under the kubelet's root are exactly
    the staging paths and targets the records hold, the staging mount is on the volume's
    own device, and each staged image has its device. Unsettled (just after a restart) the
    records need only cover the host: a path the host lost stays recorded until the
    orchestrator stages or unpublishes again.
    """
    records = volume_records(data_dir)
    for record in records:
        assert record.phase is Phase.READY, f"{record.volume_id} left in phase {record.phase}"
    assert scratch_files(data_dir) == [], "scratch files left behind"

    expected: set[str] = set()
    for record in records:
        # Only a loop filesystem mounts its staging path: a directory's stage is its
        # record, a block volume's its loop device.
        loop_filesystem = record.kind is VolumeKind.LOOP and record.access_type is AccessType.MOUNT
        if record.staging_path and loop_filesystem:
            expected.add(record.staging_path)
        expected |= set(record.targets)
    on_host = mounts_under(kubelet_root)
    assert sorted(on_host) == sorted(set(on_host)), f"stacked mounts: {on_host}"
    if settled:
        assert set(on_host) == expected, f"host mounts {sorted(on_host)} != records {expected}"
    else:
        assert set(on_host) <= expected, f"mounts {sorted(on_host)} beyond records {expected}"

    for record in records:
        if record.kind is not VolumeKind.LOOP:
            continue
        image = image_path(data_dir, record.volume_id)
        devices = devices_of(image)
        allowed = 1 if record.staging_path else 0
        assert len(devices) <= allowed, f"{image}: loop devices {devices}, at most {allowed}"
        if record.access_type is AccessType.MOUNT:
            sources = {m.source for m in mounts_of(devices)}
            idle = [d for d in devices if d not in sources]
            assert idle == [], f"{image}: loop devices attached but mounted nowhere: {idle}"
        if settled:
            assert len(devices) == allowed, f"{image}: loop devices {devices}, not {allowed}"
            if devices and record.access_type is AccessType.MOUNT:
                staged = {m.source for m in mounts_at(record.staging_path)}
                assert staged == {devices[0]}, f"staging mounts {staged}, device {devices[0]}"
    images = {d: b for d, b in backing_names_under(data_dir).items() if live([d])}
    known = {str(image_path(data_dir, r.volume_id)) for r in records if r.staging_path}
    assert set(images.values()) <= known, f"loop devices on unknown files: {images}"

    loop_ids = {r.volume_id for r in records if r.kind is VolumeKind.LOOP}
    dir_ids = {r.volume_id for r in records if r.kind is VolumeKind.DIRECTORY}
    assert {p.name for p in (data_dir / "images").iterdir()} == {f"{i}.img" for i in loop_ids}
    assert {p.name for p in (data_dir / "volumes").iterdir()} == dir_ids

    snapshots = snapshot_records(data_dir)
    for snapshot in snapshots:
        assert snapshot.phase is Phase.READY, f"{snapshot.snapshot_id} in {snapshot.phase}"
    contents = {
        s.snapshot_id + (".img" if s.kind is VolumeKind.LOOP else ".dir") for s in snapshots
    }
    assert {p.name for p in (data_dir / "snapshots").iterdir()} == contents
    return records


def assert_nothing_of(data_dir: Path, kubelet_root: Path, volume_id: str) -> None:
    """The volume is gone without a trace: no record, artefact, loop device or mount."""
    assert not (data_dir / "state" / "volumes" / f"{volume_id}.json").exists()
    assert not image_path(data_dir, volume_id).exists()
    assert not (data_dir / "volumes" / volume_id).exists()
    assert [p for p in data_dir.rglob(f"{volume_id}*")] == []
    assert loops_for(image_path(data_dir, volume_id)) == []
    assert mounts_under(kubelet_root) == []


def check_consistent(data_dir: Path, kubelet: Path, volume_id: str) -> bool:
    """One loop volume, after racing calls: it either exists with a record covering the
    host, or is entirely gone. Returns whether it exists."""
    record = read_record(data_dir, volume_id)
    image = image_path(data_dir, volume_id)
    mounted = set(mounts_under(kubelet))
    loops = loops_for(image)
    assert not list(data_dir.glob("images/*.partial")), "a scratch image was left behind"
    if record is None:
        assert not image.exists(), "no record, but the image file is still there"
        assert not mounted, f"no record, but mounts remain: {mounted}"
        assert not loops, f"no record, but loop devices remain: {loops}"
        return False
    assert record["phase"] == "ready", record
    assert image.is_file(), "the record is ready but the image is missing"
    assert len(loops) <= 1, f"more than one loop device for one image: {loops}"
    known = {record["staging_path"], *record["targets"]} - {""}
    assert mounted <= known, f"mounts {mounted - known} are not in the record"
    if mounted:
        assert loops, "a mounted volume has no loop device"
        assert record["staging_path"] in mounted, "published but the staging mount is gone"
    return True
