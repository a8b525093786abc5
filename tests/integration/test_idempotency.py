"""Every node call may be repeated (kubelet retries): same outcome, nothing doubled."""

from __future__ import annotations

import os
import stat
import subprocess

import grpc
import pytest

from tests.support.host import loops_for, mounts_at
from tests.support.kubelet import BLOCK, DIRECTORY, EXT4, XFS, Flavour, Kubelet
from tests.support.prerequisites import need_tool
from tests.support.status import raises_code, status_of


@pytest.mark.parametrize("flavour", [EXT4, XFS, DIRECTORY, BLOCK], ids=lambda f: f.id)
def test_repeated_calls_converge(kubelet: Kubelet, flavour: Flavour) -> None:
    if flavour.fs_type == "xfs":
        need_tool("mkfs.xfs")
    cap = flavour.cap()
    volume_id = kubelet.create("again", flavour)
    assert kubelet.create("again", flavour) == volume_id
    artefact = kubelet.artefact(volume_id, flavour)
    staging = kubelet.staging(volume_id)
    target = kubelet.target("pod")

    kubelet.stage(volume_id, staging, cap)
    kubelet.stage(volume_id, staging, cap)
    kubelet.publish(volume_id, staging, target, cap)
    kubelet.publish(volume_id, staging, target, cap)

    assert len(mounts_at(target)) == 1, "a repeated publish stacked a second mount"
    if not flavour.block:
        staged = 1 if flavour.fs_type else 0  # a directory's stage mounts nothing
        assert len(mounts_at(staging)) == staged, "a repeated stage stacked a second mount"
        (target / "once").write_text("1")
    else:
        assert stat.S_ISBLK(os.stat(target).st_mode)
    if flavour.params["volumeType"] == "loop":
        assert len(loops_for(artefact)) == 1, "one backing file, one loop device"

    kubelet.unpublish(volume_id, target)
    kubelet.unpublish(volume_id, target)
    assert not target.exists()
    kubelet.unstage(volume_id, staging)
    kubelet.unstage(volume_id, staging)
    assert not mounts_at(staging)
    assert loops_for(artefact) == []

    kubelet.delete(volume_id)
    kubelet.delete(volume_id)
    assert not artefact.exists()


def test_republish_with_other_options_is_refused(kubelet: Kubelet) -> None:
    cap = EXT4.cap()
    volume_id = kubelet.create("changed-mind", EXT4)
    staging = kubelet.staging(volume_id)
    target = kubelet.target("pod")
    kubelet.stage(volume_id, staging, cap)
    kubelet.publish(volume_id, staging, target, cap)

    code = status_of(lambda: kubelet.publish(volume_id, staging, target, cap, readonly=True))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert len(mounts_at(target)) == 1
    assert "rw" in mounts_at(target)[0].options

    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


def test_unpublish_and_unstage_of_never_used_paths(kubelet: Kubelet) -> None:
    volume_id = kubelet.create("idle", EXT4)
    staging = kubelet.staging(volume_id)
    kubelet.unpublish(volume_id, kubelet.target("never"))
    kubelet.unstage(volume_id, staging)
    assert staging.is_dir()
    kubelet.delete(volume_id)


@pytest.mark.parametrize("flavour", [EXT4, DIRECTORY, BLOCK], ids=lambda f: f.id)
def test_a_staging_path_with_someone_elses_mount_is_refused(
    kubelet: Kubelet, flavour: Flavour
) -> None:
    """A mount the driver did not make is never stacked on, nor unmounted by an unstage."""
    volume_id = kubelet.create("occupied", flavour)
    staging = kubelet.staging(volume_id)
    subprocess.run(["mount", "-t", "tmpfs", "not-the-drivers", str(staging)], check=True)
    try:
        with raises_code(grpc.StatusCode.FAILED_PRECONDITION) as refusal:
            kubelet.stage(volume_id, staging, flavour.cap())
        assert "already has something else mounted on it" in refusal.details
        kubelet.unstage(volume_id, staging)
        assert len(mounts_at(staging)) == 1, "the other mount was stacked on or removed"
    finally:
        subprocess.run(["umount", str(staging)], check=False)
    kubelet.delete(volume_id)
