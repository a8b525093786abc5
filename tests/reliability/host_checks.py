"""What the host and the data root must look like between operations, read independently.

Records are parsed from disk here (not asked of the driver), mounts and loop devices come
from /proc and /sys (tests.integration.support), so a driver bug cannot hide itself.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
from pathlib import Path

from csi.layout import Layout
from csi.state.records import AccessType, Phase, SnapshotRecord, VolumeKind, VolumeRecord
from csi.state.store import volume_json
from tests.integration.support import (
    file_id,
    force_cleanup,
    loop_backing_ids,
    loop_devices,
    loops_for,
    loops_under,
    mounts,
    mounts_at,
    mounts_under,
    sh,
)

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
SCRATCH_SUFFIXES = (".partial", ".deleting", ".tmp")


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


def devices_of(image: Path, identities: dict[str, tuple[int, int, str]] | None = None) -> list[str]:
    """The image's loop devices: those backed by its inode, whatever name the kernel shows
    for it (one attached by a driver in another mount namespace reads ``/images/...``), and
    those still named after its path (a deleted image's, which no other file can be)."""
    identities = loop_backing_ids() if identities is None else identities
    wanted = file_id(image) if image.exists() else None
    by_id = {d for d, (dev, ino, _) in identities.items() if (dev, ino) == wanted}
    return sorted(by_id | set(loops_for(image)))


def scratch_files(data_dir: Path) -> list[str]:
    return sorted(str(p) for p in data_dir.rglob("*") if p.name.endswith(SCRATCH_SUFFIXES))


def image_path(data_dir: Path, volume_id: str) -> Path:
    return data_dir / "images" / f"{volume_id}.img"


def is_frozen(mount_point: Path | str) -> bool:
    """True if the filesystem at ``mount_point`` is frozen. Never blocks: FIFREEZE on a
    frozen filesystem fails with EBUSY; on a live one it freezes, and we thaw at once."""
    fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.ioctl(fd, FIFREEZE, 0)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return True
            raise
        fcntl.ioctl(fd, FITHAW, 0)
        return False
    finally:
        os.close(fd)


def thaw_everything_under(root: Path) -> None:
    """Thaw any frozen filesystem mounted under ``root`` (so cleanup cannot hang)."""
    for point in mounts_under(root):
        try:
            fd = os.open(point, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.ioctl(fd, FITHAW, 0)
        except OSError:
            pass
        finally:
            os.close(fd)


def leftovers(root: Path) -> tuple[list[str], list[str]]:
    """(mount points, loop devices) under ``root``; a loop counts if its file is under it."""
    return mounts_under(root), loops_under(root)


def clean_up_host(root: Path) -> None:
    """Unmount and detach everything under ``root``, nested loop-on-loop roots included.

    The loop devices are listed first, while their backing paths are still visible (a lazy
    unmount hides them), and unmounts alternate with detaches: a data root on a loop
    device stays busy until the volume devices backed by files on it are detached.
    """
    thaw_everything_under(root)
    devices = loops_under(root)
    for _ in range(5):
        points = sorted(mounts_under(root), key=len, reverse=True)
        if not points and not loops_under(root):
            return
        for point in points:
            sh("umount", "--", point)
        for device in devices:
            sh("losetup", "--detach", device)
    force_cleanup(root)
    for device in devices:
        sh("losetup", "--detach", device)


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

    sources = {m.source for m in mounts()}
    identities = loop_backing_ids()  # one reading: device -> its backing file's identity
    for record in records:
        if record.kind is not VolumeKind.LOOP:
            continue
        image = image_path(data_dir, record.volume_id)
        devices = devices_of(image, identities)
        allowed = 1 if record.staging_path else 0
        assert len(devices) <= allowed, f"{image}: loop devices {devices}, at most {allowed}"
        if record.access_type is AccessType.MOUNT:
            idle = [d for d in devices if d not in sources]
            assert idle == [], f"{image}: loop devices attached but mounted nowhere: {idle}"
        if settled:
            assert len(devices) == allowed, f"{image}: loop devices {devices}, not {allowed}"
            if devices and record.access_type is AccessType.MOUNT:
                staged = {m.source for m in mounts_at(record.staging_path)}
                assert staged == {devices[0]}, f"staging mounts {staged}, device {devices[0]}"
    images = {d: b for d, b in loop_devices().items() if b.startswith(str(data_dir) + "/")}
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


def read_ext4_file(image: Path, name: str) -> bytes:
    """Read ``/name`` from an unmounted ext4 image with debugfs (no mount, no loop)."""
    done = subprocess.run(
        ["debugfs", "-R", f"cat /{name}", str(image)], capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout
