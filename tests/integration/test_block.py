"""Raw block volumes: the pod gets a device node backed by the volume's image."""

from __future__ import annotations

import errno
import os
import stat
import subprocess

import grpc

from csi.host import loopdev
from csi.pb import csi_pb2
from tests.support.host import device_size, loops_for, mounts_at, read_at, write_at, write_error
from tests.support.kubelet import BLOCK, MIB, Kubelet
from tests.support.status import status_of

OFFSET = 5 * MIB + 123
PAYLOAD = b"block payload \x00\xff" * 64


def test_block_volume_lifecycle(kubelet: Kubelet) -> None:
    cap = BLOCK.cap()
    volume_id = kubelet.create("raw", BLOCK)
    image = kubelet.image(volume_id)
    assert image.stat().st_size == BLOCK.size
    staging = kubelet.staging(volume_id)
    target = kubelet.target("db", "dev")

    kubelet.stage(volume_id, staging, cap)
    (device,) = loops_for(image)
    kubelet.publish(volume_id, staging, target, cap)
    st = os.stat(target)
    assert stat.S_ISBLK(st.st_mode), "the target must be a block device node"
    assert st.st_rdev == os.stat(device).st_rdev
    assert device_size(target) == BLOCK.size
    write_at(target, OFFSET, PAYLOAD)

    stats = kubelet.stats(volume_id, target)
    (usage,) = stats.usage
    assert usage.unit == csi_pb2.VolumeUsage.Unit.BYTES
    assert usage.total == BLOCK.size

    kubelet.unpublish(volume_id, target)
    assert not target.exists(), "unpublish must remove the file it created"
    kubelet.publish(volume_id, staging, target, cap)
    assert read_at(target, OFFSET, len(PAYLOAD)) == PAYLOAD

    # Right through to the image file: the bytes survive detaching the device.
    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    assert loops_for(image) == [], "unstage must detach the loop device"
    assert read_at(image, OFFSET, len(PAYLOAD)) == PAYLOAD
    kubelet.stage(volume_id, staging, cap)
    kubelet.publish(volume_id, staging, target, cap)
    assert read_at(target, OFFSET, len(PAYLOAD)) == PAYLOAD
    assert len(loops_for(image)) == 1

    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)
    assert not image.exists()
    assert not kubelet.record(volume_id).exists()


def test_two_pods_share_one_block_device(kubelet: Kubelet) -> None:
    cap = BLOCK.cap()
    volume_id = kubelet.create("raw-shared", BLOCK)
    staging = kubelet.staging(volume_id)
    pod_a, pod_b = kubelet.target("a", "dev"), kubelet.target("b", "dev")
    kubelet.stage(volume_id, staging, cap)
    kubelet.publish(volume_id, staging, pod_a, cap)
    kubelet.publish(volume_id, staging, pod_b, cap)
    write_at(pod_a, OFFSET, PAYLOAD)
    assert read_at(pod_b, OFFSET, len(PAYLOAD)) == PAYLOAD
    assert len(loops_for(kubelet.image(volume_id))) == 1

    # Still in use by pod b: unstage is refused, and the device stays attached.
    kubelet.unpublish(volume_id, pod_a)
    code = status_of(lambda: kubelet.unstage(volume_id, staging))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert read_at(pod_b, OFFSET, len(PAYLOAD)) == PAYLOAD

    kubelet.unpublish(volume_id, pod_b)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


def test_read_only_block_publish_refuses_writes(kubelet: Kubelet) -> None:
    cap = BLOCK.cap()
    volume_id = kubelet.create("raw-ro", BLOCK)
    image = kubelet.image(volume_id)
    staging = kubelet.staging(volume_id)
    target = kubelet.target("viewer", "dev")
    kubelet.stage(volume_id, staging, cap)
    try:
        kubelet.publish(volume_id, staging, target, cap, readonly=True)
        assert "ro" in mounts_at(target)[0].options
        failure = write_error(target, OFFSET, PAYLOAD)
        landed = read_at(image, OFFSET, len(PAYLOAD)) == PAYLOAD
        assert not landed, "a write through the read-only target reached the volume"
        assert failure in (errno.EROFS, errno.EACCES, errno.EPERM)
    finally:
        kubelet.unpublish(volume_id, target)
        kubelet.unstage(volume_id, staging)
        kubelet.delete(volume_id)


def test_delete_refused_while_block_volume_staged(kubelet: Kubelet) -> None:
    cap = BLOCK.cap()
    volume_id = kubelet.create("raw-staged", BLOCK)
    image = kubelet.image(volume_id)
    staging = kubelet.staging(volume_id)
    target = kubelet.target("db", "dev")
    kubelet.stage(volume_id, staging, cap)
    kubelet.publish(volume_id, staging, target, cap)
    write_at(target, OFFSET, PAYLOAD)
    kubelet.unpublish(volume_id, target)
    try:
        assert status_of(lambda: kubelet.delete(volume_id)) == grpc.StatusCode.FAILED_PRECONDITION
        assert image.is_file(), "the staged volume's image was deleted"
        assert len(loops_for(image)) == 1, "the staged volume's loop device was detached"
        assert read_at(image, OFFSET, len(PAYLOAD)) == PAYLOAD, "the data was lost"
    finally:
        status_of(lambda: kubelet.unstage(volume_id, staging))
        status_of(lambda: kubelet.delete(volume_id))


def test_unstage_frees_the_device_from_a_stale_loop_device_stacked_on_it(
    kubelet: Kubelet,
) -> None:
    """The kubelet holds a published raw block device with a loop device of its own, stacked
    on ours, and removes it when it unmaps the pod. A kubelet that forgot it (a kind node's
    container restarted: the kernel, and so the loop devices, stay) leaves it holding our
    device open, so our detach could only be deferred for ever, and the deleted image's
    blocks never freed. By unstage, nothing of the volume is published: a loop device still
    stacked on ours is stale, and goes first."""
    cap = BLOCK.cap()
    volume_id = kubelet.create("raw-held", BLOCK)
    image = kubelet.image(volume_id)
    staging = kubelet.staging(volume_id)
    target = kubelet.target("db", "dev")
    kubelet.stage(volume_id, staging, cap)
    (device,) = loops_for(image)
    kubelet.publish(volume_id, staging, target, cap)
    stacked = subprocess.run(
        ["losetup", "--find", "--show", device], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        kubelet.unpublish(volume_id, target)
        kubelet.unstage(volume_id, staging)
        assert loops_for(image) == [], "unstage must detach the volume's loop device"
        assert not any(d.path == stacked for d in loopdev.all_devices()), "stale device left"
        kubelet.delete(volume_id)
        assert not image.exists()
    finally:
        subprocess.run(["losetup", "-d", stacked], capture_output=True, check=False)
