"""Reboot and restart: mounts and loop devices gone behind the driver's back; data survives."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from csi.layout import Layout, volume_id_for_name
from csi.pb import csi_pb2
from csi.state.records import AccessType, Phase, VolumeKind, VolumeRecord, VolumeSpec
from csi.state.store import StateStore
from tests.support.driver import RunningDriver, running_driver
from tests.support.host import loops_for, mounts_at, read_at, sh, write_at
from tests.support.kubelet import BLOCK, EXT4, MIB, Flavour, Kubelet

OFFSET = 3 * MIB


def kubelet_for(driver: RunningDriver, tmp_path: Path) -> Kubelet:
    return Kubelet(driver.client, tmp_path / "kubelet", driver.data_dir)


def put_data(target: Path, flavour: Flavour, data: bytes) -> None:
    if flavour.block:
        write_at(target, OFFSET, data)
    else:
        (target / "data").write_bytes(data)


def get_data(target: Path, flavour: Flavour, length: int) -> bytes:
    if flavour.block:
        return read_at(target, OFFSET, length)
    return (target / "data").read_bytes()


def stage_and_publish(kubelet: Kubelet, volume_id: str, flavour: Flavour) -> tuple[Path, Path]:
    staging, target = kubelet.staging(volume_id), kubelet.target(f"pod-{volume_id[-6:]}")
    kubelet.stage(volume_id, staging, flavour.cap())
    kubelet.publish(volume_id, staging, target, flavour.cap())
    return staging, target


def tear_down(kubelet: Kubelet, volume_id: str, staging: Path, target: Path) -> None:
    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


def simulate_reboot(mount_points: list[Path], images: list[Path]) -> None:
    """What a reboot does behind the driver's back: every mount and loop device vanishes."""
    for point in mount_points:
        done = sh("umount", "--", str(point))
        assert done.returncode == 0, done.stderr
    for image in images:
        for device in loops_for(image):
            done = sh("losetup", "-d", device)
            assert done.returncode == 0, done.stderr
        assert loops_for(image) == []


@pytest.mark.parametrize("second", [EXT4, BLOCK], ids=lambda f: f.id)
@pytest.mark.parametrize("reboot", [True, False], ids=["reboot", "restart-only"])
def test_volumes_come_back_after_restart(tmp_path: Path, second: Flavour, reboot: bool) -> None:
    data_dir = tmp_path / "data"
    payload = {"a": b"A" * 512 + b" data of volume a", "b": b"B" * 512 + b" data of volume b"}
    flavours = {"a": EXT4, "b": second}
    with running_driver(data_dir) as driver:
        kubelet = kubelet_for(driver, tmp_path)
        ids = {key: kubelet.create(f"vol-{key}", flavours[key]) for key in flavours}
        paths = {key: stage_and_publish(kubelet, ids[key], flavours[key]) for key in flavours}
        for key in flavours:
            put_data(paths[key][1], flavours[key], payload[key])
        images = [kubelet.image(ids[key]) for key in flavours]

    if reboot:
        targets = [paths[key][1] for key in flavours]
        staged = [paths[key][0] for key in flavours if not flavours[key].block]
        simulate_reboot(targets + staged, images)

    with running_driver(data_dir) as driver:
        kubelet = kubelet_for(driver, tmp_path)
        # In reverse order, so after a reboot each volume gets the other's old loop device.
        for key in reversed(flavours):
            staging, target = paths[key]
            kubelet.stage(ids[key], staging, flavours[key].cap())
            kubelet.publish(ids[key], staging, target, flavours[key].cap())
        for key in flavours:
            target = paths[key][1]
            assert get_data(target, flavours[key], len(payload[key])) == payload[key]
            assert len(mounts_at(target)) == 1
        for image in images:
            assert len(loops_for(image)) == 1, f"expected one loop device for {image}"
        for key in flavours:
            tear_down(kubelet, ids[key], *paths[key])
        for image in images:
            assert not image.exists()


def test_reconcile_detaches_loops_nothing_uses(tmp_path: Path) -> None:
    """A crash between losetup and mount leaves an attached, unmounted loop device."""
    data_dir = tmp_path / "data"
    with running_driver(data_dir) as driver:
        kubelet = kubelet_for(driver, tmp_path)
        idle = kubelet.create("never-staged", EXT4)
        interrupted = kubelet.create("was-staged", EXT4)
        staging, target = stage_and_publish(kubelet, interrupted, EXT4)
        (target / "kept").write_text("survives")
    # Behind the driver's back: a loop device for the idle volume, and the other volume's
    # mounts gone while its loop device stays attached.
    attached = sh("losetup", "--find", "--show", str(kubelet.image(idle)))
    assert attached.returncode == 0, attached.stderr
    simulate_reboot([target, staging], [])
    assert len(loops_for(kubelet.image(interrupted))) == 1

    with running_driver(data_dir) as driver:
        kubelet = kubelet_for(driver, tmp_path)
        assert loops_for(kubelet.image(idle)) == []
        assert loops_for(kubelet.image(interrupted)) == []
        kubelet.stage(interrupted, staging, EXT4.cap())
        kubelet.publish(interrupted, staging, target, EXT4.cap())
        assert (target / "kept").read_text() == "survives"
        assert len(loops_for(kubelet.image(interrupted))) == 1
        tear_down(kubelet, interrupted, staging, target)
        kubelet.delete(idle)


def test_half_made_volume_rolled_back_and_orphan_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    layout = Layout(data_dir)
    layout.ensure()
    name = "half-made"
    volume_id = volume_id_for_name(name)
    StateStore(layout).put(
        VolumeRecord(
            volume_id=volume_id,
            name=name,
            spec=VolumeSpec(VolumeKind.LOOP, AccessType.MOUNT, "ext4"),
            capacity_bytes=EXT4.size,
            created_at=time.time(),
            phase=Phase.CREATING,
        )
    )
    partial = layout.images_dir / f"{volume_id}.img.partial"
    partial.write_bytes(b"\0" * 4096)
    orphan = layout.images_dir / f"vol-{'0' * 32}.img"
    orphan.write_bytes(b"somebody's data, no record")
    record_path = layout.record_path(volume_id)
    assert record_path.is_file()

    with running_driver(data_dir) as driver:
        assert not record_path.exists(), "the interrupted create was not rolled back"
        assert not partial.exists()
        assert orphan.read_bytes() == b"somebody's data, no record"
        listed = driver.client.controller.ListVolumes(csi_pb2.ListVolumesRequest())
        assert [e.volume.volume_id for e in listed.entries] == []
        # A retried CreateVolume for the same name converges to a working volume.
        kubelet = kubelet_for(driver, tmp_path)
        assert kubelet.create(name, EXT4) == volume_id
        staging, target = stage_and_publish(kubelet, volume_id, EXT4)
        assert mounts_at(target)[0].fs_type == "ext4"
        tear_down(kubelet, volume_id, staging, target)

    with running_driver(data_dir):
        assert orphan.read_bytes() == b"somebody's data, no record"


def test_pod_gone_after_reboot_cleans_up(tmp_path: Path) -> None:
    """Kubelet may unpublish and unstage after a reboot instead of publishing again."""
    data_dir = tmp_path / "data"
    with running_driver(data_dir) as driver:
        kubelet = kubelet_for(driver, tmp_path)
        volume_id = kubelet.create("orphaned-pod", EXT4)
        staging, target = stage_and_publish(kubelet, volume_id, EXT4)
    simulate_reboot([target, staging], [kubelet.image(volume_id)])

    with running_driver(data_dir) as driver:
        kubelet = kubelet_for(driver, tmp_path)
        kubelet.unpublish(volume_id, target)
        assert not target.exists(), "the stale target directory was left behind"
        kubelet.unstage(volume_id, staging)
        kubelet.delete(volume_id)
        assert not kubelet.image(volume_id).exists()
        assert not kubelet.record(volume_id).exists()
