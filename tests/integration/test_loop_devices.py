"""Loop devices that outlive a detach because another process still has them open.

``losetup --detach`` on a busy device only marks it autoclear and returns success; the
device stays bound (sometimes to a file that has since been deleted) until the last
opener closes it. Short-lived openers are common on real nodes: udev's blkid probe,
multipathd, LVM scans, backup agents.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from tests.support.host import device_size, loops_for, read_at, write_at
from tests.support.kubelet import BLOCK, Kubelet
from tests.support.status import status_of

OLD = b"old volume's bytes " * 16
NEW = b"new volume's bytes " * 16


@contextmanager
def someone_holds(device: str) -> Iterator[None]:
    fd = os.open(device, os.O_RDONLY)
    try:
        yield
    finally:
        os.close(fd)
        time.sleep(0.2)  # let the kernel finish the autoclear


def give_up(kubelet: Kubelet, volume_id: str, staging: Path, target: Path) -> None:
    status_of(lambda: kubelet.unpublish(volume_id, target))
    status_of(lambda: kubelet.unstage(volume_id, staging))
    status_of(lambda: kubelet.delete(volume_id))


def test_restage_after_a_busy_detach_gets_a_lasting_device(kubelet: Kubelet) -> None:
    cap = BLOCK.cap()
    volume_id = kubelet.create("busy", BLOCK)
    image = kubelet.image(volume_id)
    staging, target = kubelet.staging(volume_id), kubelet.target("db", "dev")
    try:
        kubelet.stage(volume_id, staging, cap)
        (device,) = loops_for(image)
        with someone_holds(device):
            # Whether the driver reports this unstage as done or refuses it, what
            # follows must leave the pod with a working device.
            status_of(lambda: kubelet.unstage(volume_id, staging))
            kubelet.stage(volume_id, staging, cap)
            kubelet.publish(volume_id, staging, target, cap)
            write_at(target, 0, NEW)
        # The other process has gone; the pod's device must still be the volume.
        assert len(loops_for(image)) == 1, "the volume lost its loop device"
        assert device_size(target) == BLOCK.size
        assert read_at(target, 0, len(NEW)) == NEW
    finally:
        give_up(kubelet, volume_id, staging, target)


def test_recreated_volume_never_sees_the_deleted_volumes_data(kubelet: Kubelet) -> None:
    cap = BLOCK.cap()
    volume_id = kubelet.create("reused-name", BLOCK)
    image = kubelet.image(volume_id)
    staging, target = kubelet.staging(volume_id), kubelet.target("db", "dev")
    try:
        kubelet.stage(volume_id, staging, cap)
        kubelet.publish(volume_id, staging, target, cap)
        write_at(target, 0, OLD)
        (device,) = loops_for(image)
        with someone_holds(device):
            kubelet.unpublish(volume_id, target)
            status_of(lambda: kubelet.unstage(volume_id, staging))
            if status_of(lambda: kubelet.delete(volume_id)) != grpc.StatusCode.OK:
                assert image.exists(), "a refused delete must keep the data"
                return  # refusing while the device is busy is a correct outcome too
            assert not image.exists()
            # Same name, so same ID and same image path: a fresh, empty volume.
            assert kubelet.create("reused-name", BLOCK) == volume_id
            kubelet.stage(volume_id, staging, cap)
            kubelet.publish(volume_id, staging, target, cap)
            assert read_at(target, 0, len(OLD)) != OLD, "the deleted volume's data showed up"
            write_at(target, 0, NEW)
            assert read_at(image, 0, len(NEW)) == NEW, "writes missed the new image"
    finally:
        give_up(kubelet, volume_id, staging, target)
