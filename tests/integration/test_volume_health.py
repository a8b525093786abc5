"""CSI 1.13 health: each condition of csi/volumes/conditions.py provoked on the real host and
reported, with its type and reason, by ControllerGetVolumeHealth, ControllerListVolumeHealth
and NodeGetVolumeHealth (and the data root's by NodeGetStorageHealth); healthy reports nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from csi.pb import csi_pb2
from tests.integration.snapshot_support import Session
from tests.support.driver import RunningDriver, running_driver
from tests.support.host import loops_for, sh
from tests.support.kubelet import BLOCK, EXT4, MIB, Flavour

Status = tuple[str, str]  # (type name, reason)


def controller_health(session: Session, volume_id: str) -> set[Status]:
    reply = session.controller.ControllerGetVolumeHealth(
        csi_pb2.ControllerGetVolumeHealthRequest(volume_id=volume_id)
    )
    assert reply.volume_health.volume_id == volume_id
    return {
        (csi_pb2.VolumeHealthErrorType.Name(e.status), e.reason)
        for e in reply.volume_health.health_statuses
    }


def listed_health(session: Session, volume_id: str) -> set[Status]:
    """ControllerListVolumeHealth one entry per page, to go through its paging too."""
    found: dict[str, set[Status]] = {}
    token = ""
    while True:
        reply = session.controller.ControllerListVolumeHealth(
            csi_pb2.ControllerListVolumeHealthRequest(max_entries=1, starting_token=token)
        )
        for entry in reply.entries:
            assert entry.volume_id not in found, "a volume listed twice"
            assert entry.health_statuses, "a healthy volume listed"
            found[entry.volume_id] = {
                (csi_pb2.VolumeHealthErrorType.Name(e.status), e.reason)
                for e in entry.health_statuses
            }
        token = reply.next_token
        if not token:
            return found.get(volume_id, set())


def node_health(
    session: Session, volume_id: str, staging: Path, target: Path | None
) -> set[Status]:
    reply = session.node.NodeGetVolumeHealth(
        csi_pb2.NodeGetVolumeHealthRequest(
            volume_id=volume_id,
            staging_target_path=str(staging),
            volume_publish_path=str(target) if target else "",
        )
    )
    return {
        (csi_pb2.VolumeHealthErrorType.Name(e.status), e.reason)
        for e in reply.volume_health.health_statuses
    }


def everywhere(
    session: Session, volume_id: str, staging: Path, target: Path | None
) -> list[set[Status]]:
    return [
        controller_health(session, volume_id),
        listed_health(session, volume_id),
        node_health(session, volume_id, staging, target),
    ]


def staged(session: Session, flavour: Flavour, name: str) -> tuple[str, Path, Path]:
    volume = session.create(name, flavour)
    target = session.mount(volume, flavour)
    return volume, session.kubelet.staging(volume), target


def test_healthy_volumes_report_nothing(session: Session) -> None:
    other = session.create("health-idle", EXT4)
    volume, staging, target = staged(session, EXT4, "health-ok")
    assert everywhere(session, volume, staging, target) == [set(), set(), set()]
    assert controller_health(session, other) == set()


@pytest.mark.parametrize("flavour", [EXT4, BLOCK], ids=lambda f: f.id)
def test_image_removed(session: Session, flavour: Flavour) -> None:
    volume = session.create("health-image", flavour)
    image = session.kubelet.image(volume)
    hidden = image.with_name(image.name + ".hidden")
    image.rename(hidden)
    try:
        want = {("DATA_LOSS", "VolumeDataMissing")}
        assert controller_health(session, volume) == want
        assert listed_health(session, volume) == want
    finally:
        hidden.rename(image)
    assert controller_health(session, volume) == set()


def test_staging_mount_gone_then_loop_detached(session: Session) -> None:
    volume = session.create("health-staging", EXT4)
    staging = session.kubelet.staging(volume)
    session.later(lambda: session.kubelet.unstage(volume, staging))
    session.kubelet.stage(volume, staging, EXT4.cap())
    (device,) = loops_for(session.kubelet.image(volume))

    assert sh("umount", str(staging)).returncode == 0
    want = {("INACCESSIBLE", "StagingMountMissing")}
    assert everywhere(session, volume, staging, None) == [want] * 3
    assert sh("losetup", "-d", device).returncode == 0
    want = {("INACCESSIBLE", "LoopDeviceDetached")}
    assert everywhere(session, volume, staging, None) == [want] * 3

    session.kubelet.unstage(volume, staging)
    assert controller_health(session, volume) == set()


def test_publish_target_gone(session: Session) -> None:
    volume, staging, target = staged(session, EXT4, "health-target")
    assert sh("umount", str(target)).returncode == 0
    want = {("INACCESSIBLE", "PublishMountMissing")}
    assert everywhere(session, volume, staging, target) == [want] * 3
    session.kubelet.unpublish(volume, target)
    assert controller_health(session, volume) == set()


def test_read_only_remount(session: Session) -> None:
    volume, staging, target = staged(session, EXT4, "health-ro")
    assert sh("mount", "-o", "remount,ro", str(staging)).returncode == 0
    want = {("DEGRADED", "FilesystemReadOnly")}
    assert everywhere(session, volume, staging, target) == [want] * 3
    assert sh("mount", "-o", "remount,rw", str(staging)).returncode == 0
    assert everywhere(session, volume, staging, target) == [set(), set(), set()]


def test_ext4_errors(session: Session) -> None:
    volume, staging, target = staged(session, EXT4, "health-fserr")
    (device,) = loops_for(session.kubelet.image(volume))
    trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
    if not trigger.exists():
        pytest.skip("this kernel has no ext4 trigger_fs_error")
    trigger.write_text("health test\n")
    # The kernel writes the error count into its superblock from a work item, a moment
    # after the error.
    errors_count = trigger.with_name("errors_count")
    deadline = time.monotonic() + 30
    while errors_count.read_text().strip() == "0":
        assert time.monotonic() < deadline, "the kernel never counted the error"
        time.sleep(0.1)
    found = everywhere(session, volume, staging, target)
    # ext4 remounts read-only on an error if its superblock says so; either way the
    # volume is reported, and the recorded errors show once it is writable again.
    assert all(
        f & {("DATA_LOSS", "FilesystemErrors"), ("DEGRADED", "FilesystemReadOnly")} for f in found
    ), found
    sh("mount", "-o", "remount,rw", str(staging))
    assert controller_health(session, volume) == {("DATA_LOSS", "FilesystemErrors")}


def test_node_paths_the_driver_does_not_hold(session: Session) -> None:
    volume, staging, _ = staged(session, EXT4, "health-paths")
    elsewhere = session.kubelet.target("pod-elsewhere")
    assert node_health(session, volume, staging, elsewhere) == {
        ("INACCESSIBLE", "PublishMountMissing")
    }


@pytest.fixture
def small_root(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB ext4 filesystem of its own, for a data root that can fill up."""
    image, mountpoint = tmp_path / "root.img", tmp_path / "small"
    mountpoint.mkdir()
    with image.open("wb") as fh:
        fh.truncate(32 * MIB)
    assert sh("mkfs.ext4", "-q", "-m", "0", str(image)).returncode == 0
    assert sh("mount", "-o", "loop", str(image), str(mountpoint)).returncode == 0
    try:
        yield mountpoint
    finally:
        sh("umount", str(mountpoint))


def storage(driver: RunningDriver) -> set[Status]:
    reply = driver.client.node.NodeGetStorageHealth(csi_pb2.NodeGetStorageHealthRequest())
    return {(csi_pb2.StorageHealthErrorType.Name(b.status), b.reason) for b in reply.backend_health}


def test_data_root_full_then_read_only(small_root: Path) -> None:
    with running_driver(small_root / "data") as driver:
        assert storage(driver) == set()
        filler = small_root / "filler"
        with filler.open("wb") as fh:
            try:
                while True:
                    fh.write(b"\1" * MIB)
                    fh.flush()
            except OSError:
                pass
        assert storage(driver) == {("STORAGE_DEGRADED", "DataRootFull")}
        filler.unlink()
        assert storage(driver) == set()
        assert sh("mount", "-o", "remount,ro", str(small_root)).returncode == 0
        try:
            assert storage(driver) == {("STORAGE_DEGRADED", "DataRootReadOnly")}
        finally:
            sh("mount", "-o", "remount,rw", str(small_root))
