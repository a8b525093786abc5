"""Issue 18 where a real volume is made: a request below a filesystem's minimum is rounded
up, and the reply (so the PV and the claim's status.capacity) says what was really made.
The refusals themselves are in tests/unit/test_mistakes.py; a key that does not match the
volume's at NodeStageVolume in tests/integration/test_encryption.py."""

from __future__ import annotations

import os

import pytest

from csi.pb import csi_pb2
from tests.support.driver import RunningDriver
from tests.support.kubelet import MIB, Kubelet, mount_capability


@pytest.mark.parametrize(("fs_type", "minimum"), [("ext4", 16 * MIB), ("xfs", 300 * MIB)])
def test_below_the_minimum_is_rounded_up_and_reported(
    driver: RunningDriver, kubelet: Kubelet, fs_type: str, minimum: int
) -> None:
    request = csi_pb2.CreateVolumeRequest(
        name=f"tiny-{fs_type}",
        parameters={"volumeType": "loop", "csi.storage.k8s.io/fstype": fs_type},
        capacity_range=csi_pb2.CapacityRange(required_bytes=MIB),  # a claim of 1Mi
        volume_capabilities=[mount_capability()],
    )
    volume = driver.client.controller.CreateVolume(request).volume
    try:
        assert volume.capacity_bytes == minimum
        assert kubelet.image(volume.volume_id).stat().st_size == minimum  # what was made
        listed = driver.client.controller.ControllerGetVolume(
            csi_pb2.ControllerGetVolumeRequest(volume_id=volume.volume_id)
        ).volume
        assert listed.capacity_bytes == minimum
        staging = kubelet.staging(volume.volume_id)
        kubelet.stage(volume.volume_id, staging)
        try:
            stats = os.statvfs(staging)
            # The filesystem fills the image (less its own metadata), not the 1 MiB asked.
            assert stats.f_blocks * stats.f_frsize > minimum // 2
        finally:
            kubelet.unstage(volume.volume_id, staging)
    finally:
        kubelet.delete(volume.volume_id)
