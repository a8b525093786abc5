"""Online growth of a mounted ext4 loop volume, which needs CAP_SYS_RESOURCE (resize2fs
reserves its blocks with it): this host denies the driver that capability, so here the
growth is proved in a guest, whose root has every capability (run by
tests/guest/test_growth.py; not collected on the host). xfs grows online without it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from csi.pb import csi_pb2
from tests.guest.quota_cases import ROOTS
from tests.support.driver import running_driver
from tests.support.kubelet import EXT4, MIB, XFS, Flavour, Kubelet

FILESYSTEMS = ("ext4",)  # the data root the guest mounts for this module


@pytest.mark.parametrize("flavour", [EXT4, XFS], ids=lambda f: f.id)
def test_a_mounted_filesystem_grows_while_a_pod_uses_it(tmp_path: Path, flavour: Flavour) -> None:
    data_dir = Path(ROOTS["ext4"]) / f"data-{uuid.uuid4().hex[:8]}"
    with running_driver(data_dir) as running:
        kubelet = Kubelet(running.client, tmp_path / "kubelet", data_dir)
        volume = kubelet.create("grown", flavour)
        staging, target = kubelet.staging("grown"), kubelet.target("grown")
        kubelet.stage(volume, staging, flavour.cap())
        kubelet.publish(volume, staging, target, flavour.cap())
        (target / "kept").write_bytes(b"k" * MIB)
        before = os.statvfs(target).f_blocks * os.statvfs(target).f_frsize
        wanted = flavour.size + 64 * MIB
        running.client.controller.ControllerExpandVolume(
            csi_pb2.ControllerExpandVolumeRequest(
                volume_id=volume, capacity_range=csi_pb2.CapacityRange(required_bytes=wanted)
            )
        )
        reply = running.client.node.NodeExpandVolume(
            csi_pb2.NodeExpandVolumeRequest(
                volume_id=volume,
                volume_path=str(target),
                staging_target_path=str(staging),
                capacity_range=csi_pb2.CapacityRange(required_bytes=wanted),
                volume_capability=flavour.cap(),
            )
        )
        after = os.statvfs(target).f_blocks * os.statvfs(target).f_frsize
        assert after - before >= 56 * MIB, (before, after)  # 64 MiB, less new metadata
        assert reply.capacity_bytes >= wanted
        assert (target / "kept").read_bytes() == b"k" * MIB
        kubelet.unpublish(volume, target)
        kubelet.unstage(volume, staging)
        kubelet.delete(volume)
