"""The whole life of a shared volume, as two pods on one node would see it."""

from __future__ import annotations

import os

import grpc
import pytest

from csi.pb import csi_pb2
from tests.support.host import loops_for, mounts_at
from tests.support.kubelet import DIRECTORY, EXT4, XFS, Flavour, Kubelet
from tests.support.prerequisites import need_tool
from tests.support.status import status_of

Unit = csi_pb2.VolumeUsage.Unit


@pytest.fixture(params=[EXT4, XFS, DIRECTORY], ids=lambda f: f.id)
def flavour(request: pytest.FixtureRequest) -> Flavour:
    chosen: Flavour = request.param
    if chosen.fs_type == "xfs":
        need_tool("mkfs.xfs")
    return chosen


def test_shared_volume_lifecycle(kubelet: Kubelet, flavour: Flavour) -> None:
    cap = flavour.cap()
    volume_id = kubelet.create("shared", flavour)
    artefact = kubelet.artefact(volume_id, flavour)
    assert artefact.exists()
    assert kubelet.record(volume_id).is_file()

    staging = kubelet.staging(volume_id)
    pod_a, pod_b = kubelet.target("pod-a"), kubelet.target("pod-b")
    kubelet.stage(volume_id, staging, cap)
    kubelet.publish(volume_id, staging, pod_a, cap)
    kubelet.publish(volume_id, staging, pod_b, cap)

    # Two pods share the volume: what one writes, the other reads.
    (pod_a / "hello.txt").write_text("written by pod a\n")
    assert (pod_b / "hello.txt").read_text() == "written by pod a\n"
    (pod_b / "sub").mkdir()
    (pod_b / "sub" / "reply").write_bytes(b"\x00\x01from b")
    assert (pod_a / "sub" / "reply").read_bytes() == b"\x00\x01from b"

    # A directory's stage mounts nothing: each target binds the directory itself.
    assert len(mounts_at(staging)) == (1 if flavour.fs_type else 0)
    for target in (pod_a, pod_b):
        assert len(mounts_at(target)) == 1, f"expected exactly one mount at {target}"
    if flavour.fs_type:
        # The filesystem the user asked for, on the volume's own loop device.
        (device,) = loops_for(artefact)
        for target in (staging, pod_a, pod_b):
            (entry,) = mounts_at(target)
            assert entry.fs_type == flavour.fs_type
            assert entry.source == device
        st = os.statvfs(pod_a)
        total = st.f_blocks * st.f_frsize
        # Metadata (the journal, an internal xfs log) takes its share, never more.
        assert 0.75 * flavour.size <= total <= flavour.size, f"size {total}"

    stats = kubelet.stats(volume_id, pod_b)
    by_unit = {u.unit: u for u in stats.usage}
    assert set(by_unit) == {Unit.BYTES, Unit.INODES}
    for usage in by_unit.values():
        assert usage.total > 0
        assert 0 < usage.used <= usage.total
        assert 0 <= usage.available <= usage.total

    kubelet.unpublish(volume_id, pod_a)
    kubelet.unpublish(volume_id, pod_b)
    assert not pod_a.exists()
    assert not pod_b.exists()
    kubelet.unstage(volume_id, staging)
    assert not mounts_at(staging)
    assert staging.is_dir(), "the caller's staging directory belongs to the caller"
    if flavour.fs_type:
        assert loops_for(artefact) == []

    # Stage and publish again: the data outlived the mounts (and the loop device).
    kubelet.stage(volume_id, staging, cap)
    kubelet.publish(volume_id, staging, pod_b, cap)
    assert (pod_b / "hello.txt").read_text() == "written by pod a\n"
    assert (pod_b / "sub" / "reply").read_bytes() == b"\x00\x01from b"
    kubelet.unpublish(volume_id, pod_b)
    kubelet.unstage(volume_id, staging)

    kubelet.delete(volume_id)
    assert not artefact.exists()
    assert not kubelet.record(volume_id).exists()
    assert list(artefact.parent.iterdir()) == [], "scratch files left next to the volume"
    # Deleting again is fine (idempotent) and changes nothing.
    kubelet.delete(volume_id)


def test_stats_on_staging_path_and_unknown_path(kubelet: Kubelet) -> None:
    volume_id = kubelet.create("stats", EXT4)
    staging = kubelet.staging(volume_id)
    kubelet.stage(volume_id, staging, EXT4.cap())
    (staging / "blob").write_bytes(os.urandom(4 * 1024 * 1024))
    os.sync()
    stats = kubelet.stats(volume_id, staging)
    used = {u.unit: u.used for u in stats.usage}
    assert used[Unit.BYTES] >= 4 * 1024 * 1024
    assert used[Unit.INODES] >= 1
    stranger = kubelet.target("stranger")
    stranger.mkdir()
    assert status_of(lambda: kubelet.stats(volume_id, stranger)) == grpc.StatusCode.NOT_FOUND
    stranger.rmdir()
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)
