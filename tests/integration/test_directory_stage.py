"""Directory volumes stage without a mount: publish binds the volume's directory itself.

What the staging path still means: NodeGetVolumeStats answers there (the volume
directory's filesystem), a read-only stage makes every target read-only, health reports a
healthy staged volume, and a staging bind made by an older driver is still a use of the
volume that unstage removes.
"""

from __future__ import annotations

import os
import subprocess

import grpc

from csi.pb import csi_pb2
from tests.legacy_condition import legacy_condition
from tests.support.host import mounts_at, mounts_under
from tests.support.kubelet import DIRECTORY, READER_ONLY, Kubelet
from tests.support.status import status_of

Unit = csi_pb2.VolumeUsage.Unit


def test_stage_mounts_nothing_and_publish_binds_the_directory(kubelet: Kubelet) -> None:
    cap = DIRECTORY.cap()
    volume_id = kubelet.create("direct", DIRECTORY)
    staging = kubelet.staging(volume_id)
    kubelet.stage(volume_id, staging, cap)
    assert mounts_at(staging) == [], "a directory's stage is its record, not a mount"
    target = kubelet.target("pod-a")
    kubelet.publish(volume_id, staging, target, cap)
    (target / "file").write_text("through the target")
    assert (kubelet.directory(volume_id) / "file").read_text() == "through the target"
    assert mounts_under(kubelet.root) == [str(target)]

    stats = kubelet.stats(volume_id, staging)  # the CO may ask at the staging path
    expected = os.statvfs(kubelet.directory(volume_id))
    total = {u.unit: u.total for u in stats.usage}
    assert total[Unit.BYTES] == expected.f_blocks * expected.f_frsize
    condition = legacy_condition(stats)  # the 1.12 condition, still sent beside 1.13 health
    assert condition is not None
    assert not condition.abnormal, condition.message

    kubelet.unpublish(volume_id, target)
    assert not target.exists()
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)
    assert not kubelet.directory(volume_id).exists()


def test_read_only_stage_makes_targets_read_only(kubelet: Kubelet) -> None:
    volume_id = kubelet.create("read-only", DIRECTORY)
    staging = kubelet.staging(volume_id)
    kubelet.stage(volume_id, staging, DIRECTORY.cap(READER_ONLY))
    target = kubelet.target("reader")
    kubelet.publish(volume_id, staging, target, DIRECTORY.cap(READER_ONLY))
    (mounted,) = mounts_at(target)
    assert "ro" in mounted.options
    # Staged for readers: a writer at the same staging path is an incompatible stage.
    code = status_of(lambda: kubelet.stage(volume_id, staging, DIRECTORY.cap()))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


def test_an_older_drivers_staging_bind_is_used_and_removed(kubelet: Kubelet) -> None:
    """A volume staged by an older driver has a bind at its staging path: it keeps the
    volume in use (no delete), publishing still works, and unstage unmounts it."""
    cap = DIRECTORY.cap()
    volume_id = kubelet.create("upgraded", DIRECTORY)
    staging = kubelet.staging(volume_id)
    kubelet.stage(volume_id, staging, cap)
    data = kubelet.directory(volume_id)
    subprocess.run(["mount", "--bind", str(data), str(staging)], check=True)  # the old stage
    target = kubelet.target("pod-b")
    kubelet.publish(volume_id, staging, target, cap)
    kubelet.unpublish(volume_id, target)
    code = status_of(lambda: kubelet.delete(volume_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    kubelet.unstage(volume_id, staging)
    assert mounts_under(kubelet.root) == [], "unstage left the older driver's bind"
    kubelet.delete(volume_id)
    assert not data.exists()


def test_stage_of_a_volume_whose_directory_is_gone(kubelet: Kubelet) -> None:
    volume_id = kubelet.create("vanished", DIRECTORY)
    os.rmdir(kubelet.directory(volume_id))
    staging = kubelet.staging(volume_id)
    code = status_of(lambda: kubelet.stage(volume_id, staging, DIRECTORY.cap()))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    target = kubelet.target("pod-c")
    code = status_of(lambda: kubelet.publish(volume_id, staging, target, DIRECTORY.cap()))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert not target.exists()
    kubelet.delete(volume_id)
