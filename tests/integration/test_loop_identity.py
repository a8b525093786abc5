"""Loop devices are identified by their backing file's device and inode, on the real kernel.

The kernel names a device's backing file relative to the mount it was attached through: a
device attached in another mount namespace, through a bind mount that has gone with it,
reads ``/images/<id>.img``. The driver must still know it as the image's device, on every
kind of filesystem the data root may sit on, and must never take a device of a deleted
image for the new image at the same path.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from csi.host import loopdev
from tests.integration.support import attach_in_a_vanished_namespace, wait_for_backing_name
from tests.support.host import (
    file_id,
    loop_backing_id,
    loop_backing_name,
    loops_backed_by,
    loops_for,
    sh,
)
from tests.support.kubelet import MIB
from tests.support.prerequisites import need, need_tool

LOOP_CTL_ADD = 0x4C80
LOOP_CTL_REMOVE = 0x4C81


def make_image(path: Path, size: int = 8 * MIB) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


def attach(image: Path, device: str = "") -> str:
    """Attach ``image`` to ``device``, or to a free device; returns the device."""
    where = [device] if device else ["--find", "--show"]
    done = sh("losetup", *where, "--", str(image))
    assert done.returncode == 0, done.stderr
    return device or done.stdout.strip()


def detach(device: str) -> None:
    sh("losetup", "--detach", device)


def test_device_attached_through_a_vanished_bind_mount_is_found(tmp_path: Path) -> None:
    need_tool("unshare")
    data = tmp_path / "data"
    image = make_image(data / "images" / "vol-a.img")
    device = attach_in_a_vanished_namespace(data, "images/vol-a.img", tmp_path / "view")
    try:
        # What the bug saw: the kernel's name for the file no longer names it.
        assert wait_for_backing_name(device, "/images/vol-a.img") == "/images/vol-a.img"
        assert loops_for(image) == [], "by name, the device is lost"
        assert loops_backed_by(file_id(image), image.name) == [device]
        # The driver still knows it, by identity.
        assert loopdev.devices_for(image) == [device]
        assert loopdev.devices_for(image, read_only=None) == [device]
        (found,) = [d for d in loopdev.all_devices() if d.path == device]
        assert found.backing == loopdev.FileId.of(image)
        assert found.backing_file == "/images/vol-a.img"
        assert found.usable
    finally:
        detach(device)
    assert loops_backed_by(file_id(image), image.name) == []


@contextmanager
def loop_device_numbered_from(first: int) -> Iterator[str]:
    """A new loop device numbered ``first`` or above (minor > 255 splits in dev_t)."""
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        number = first
        while True:
            try:
                number = fcntl.ioctl(control, LOOP_CTL_ADD, number)
                break
            except FileExistsError:
                number += 1
        path = f"/dev/loop{number}"
        deadline = time.monotonic() + 5
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        need(os.path.exists(path), f"devtmpfs made no node for {path}")
        try:
            yield path
        finally:
            with suppress(OSError):
                fcntl.ioctl(control, LOOP_CTL_REMOVE, number)
    finally:
        os.close(control)


@contextmanager
def filesystem(kind: str, where: Path) -> Iterator[Path]:
    """A directory on the data root's own filesystem, a tmpfs, an ext4 on a loop device
    numbered above 255, or an overlay; unmounted and detached afterwards."""
    where.mkdir(parents=True)
    if kind == "plain":
        yield where
        return
    if kind == "tmpfs":
        assert sh("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)).returncode == 0
        try:
            yield where
        finally:
            sh("umount", str(where))
        return
    if kind == "overlay":
        layers = {n: where.parent / f"{where.name}-{n}" for n in ("lower", "upper", "work")}
        for layer in layers.values():
            layer.mkdir()
        make_image(layers["lower"] / "lower.img")  # an image the overlay shows from below
        options = "lowerdir={lower},upperdir={upper},workdir={work}".format(**layers)
        done = sh("mount", "-t", "overlay", "-o", options, "overlay", str(where))
        need(done.returncode == 0, f"overlay mounts: {done.stderr.strip()}")
        try:
            yield where
        finally:
            sh("umount", str(where))
        return
    assert kind == "ext4-on-loop256"
    backing = make_image(where.parent / "fs.img", 64 * MIB)
    with loop_device_numbered_from(256) as device:
        attach(backing, device)
        try:
            assert sh("mkfs.ext4", "-q", device).returncode == 0
            assert sh("mount", device, str(where)).returncode == 0
            try:
                assert os.minor(os.stat(where).st_dev) > 255
                yield where
            finally:
                sh("umount", str(where))
        finally:
            detach(device)


@pytest.mark.parametrize("kind", ["plain", "tmpfs", "ext4-on-loop256", "overlay"])
def test_identity_matches_stat_on_every_kind_of_filesystem(tmp_path: Path, kind: str) -> None:
    with filesystem(kind, tmp_path / "fs") as root:
        images = [make_image(root / "vol-b.img")]
        if kind == "overlay":
            images.append(root / "lower.img")
        devices = [attach(image) for image in images]
        try:
            scanned = {d.path: d for d in loopdev.all_devices()}
            for image, device in zip(images, devices, strict=True):
                st = os.stat(image)
                assert scanned[device].backing == loopdev.FileId(st.st_dev, st.st_ino)
                assert loop_backing_id(device) == (st.st_dev, st.st_ino), "losetup disagrees"
                assert loopdev.devices_for(image) == [device]
        finally:
            for device in devices:
                detach(device)


def test_device_of_a_deleted_image_is_never_the_new_image(tmp_path: Path) -> None:
    image = make_image(tmp_path / "images" / "vol-c.img")
    old = attach(image)
    try:
        old_id = file_id(image)
        image.unlink()
        make_image(image)  # same name, as a re-created volume of the same name gets
        # The old device pins its inode, so the new file cannot have its number...
        assert file_id(image) != old_id
        assert loop_backing_name(old).endswith(" (deleted)")
        # ...and neither by name nor by identity is the old device the new image's.
        assert loopdev.devices_for(image, read_only=None) == []
        new = attach(image)
        try:
            assert loopdev.devices_for(image) == [new]
        finally:
            detach(new)
    finally:
        detach(old)
