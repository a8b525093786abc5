"""Host tools and system calls that fail: every step rolls back, and a retry afterwards
succeeds. Forked tools fail through PATH shims, system calls through CSI_FAIL_SYSCALL."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import grpc
import pytest

from csi.host.errors import FormatRefused
from csi.host.kernel import FAULT_ENV
from csi.host.mkfs import make_filesystem
from csi.pb import csi_pb2
from tests.support.host import loops_for, mounts_at, sh
from tests.support.kubelet import DIRECTORY, EXT4, MIB, XFS, Flavour, Kubelet
from tests.support.prerequisites import need_tool
from tests.support.status import rpc_error


class Shims:
    """Executables put first on PATH that fail the way a broken host tool would."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.directory = directory
        directory.mkdir()
        monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")

    def fail(self, tool: str) -> None:
        shim = self.directory / tool
        shim.write_text(f"#!/bin/sh\necho '{tool}: simulated failure' >&2\nexit 1\n")
        shim.chmod(0o755)

    def heal(self, tool: str) -> None:
        (self.directory / tool).unlink()


@pytest.fixture
def shims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shims:
    return Shims(tmp_path / "shims", monkeypatch)


def fs_type_of(path: Path) -> str:
    return sh("blkid", "--probe", "-o", "value", "-s", "TYPE", str(path)).stdout.strip()


def head_digest(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.sha256(fh.read(MIB)).hexdigest()


@pytest.mark.parametrize("flavour", [EXT4, XFS], ids=lambda f: f.id)
def test_failing_mkfs_leaves_nothing(kubelet: Kubelet, shims: Shims, flavour: Flavour) -> None:
    need_tool(f"mkfs.{flavour.fs_type}")
    tool = f"mkfs.{flavour.fs_type}"
    shims.fail(tool)
    error = rpc_error(lambda: kubelet.create("doomed", flavour))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert tool in (error.details() or "")
    assert list((kubelet.data_dir / "images").iterdir()) == [], "image or .partial left"
    assert list((kubelet.data_dir / "state" / "volumes").iterdir()) == [], "record left"
    listed = kubelet.client.controller.ListVolumes(csi_pb2.ListVolumesRequest())
    assert list(listed.entries) == []

    shims.heal(tool)
    volume_id = kubelet.create("doomed", flavour)
    assert fs_type_of(kubelet.image(volume_id)) == flavour.fs_type
    kubelet.delete(volume_id)


def test_failing_mount_during_stage_detaches_the_loop(
    kubelet: Kubelet, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume_id = kubelet.create("unlucky", EXT4)
    image = kubelet.image(volume_id)
    staging = kubelet.staging(volume_id)
    monkeypatch.setenv(FAULT_ENV, "mount:fs")
    error = rpc_error(lambda: kubelet.stage(volume_id, staging, EXT4.cap()))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "mount" in (error.details() or "")
    assert loops_for(image) == [], "a failed stage left its loop device attached"
    assert not mounts_at(staging)

    monkeypatch.delenv(FAULT_ENV)
    kubelet.stage(volume_id, staging, EXT4.cap())
    assert len(loops_for(image)) == 1
    assert mounts_at(staging)[0].fs_type == "ext4"
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


@pytest.mark.parametrize("flavour", [EXT4, DIRECTORY], ids=lambda f: f.id)
@pytest.mark.parametrize("step", ["mount:bind", "mount:remount", "umount"])
def test_failing_mount_calls_around_publish(
    kubelet: Kubelet, monkeypatch: pytest.MonkeyPatch, flavour: Flavour, step: str
) -> None:
    cap = flavour.cap()
    volume_id = kubelet.create("wobbly", flavour)
    staging = kubelet.staging(volume_id)
    target = kubelet.target("pod")
    kubelet.stage(volume_id, staging, cap)
    if step.startswith("mount:"):
        # The remount applies the flags: nosuid makes the publish take that second step.
        flagged = flavour.cap(flags=("nosuid",))
        monkeypatch.setenv(FAULT_ENV, step)
        error = rpc_error(lambda: kubelet.publish(volume_id, staging, target, flagged))
        assert error.code() == grpc.StatusCode.INTERNAL
        assert step in (error.details() or "")
        assert not target.exists(), "a failed publish left the target it created"
        assert not mounts_at(target), "a failed remount left the bind behind"
        monkeypatch.delenv(FAULT_ENV)
        kubelet.publish(volume_id, staging, target, flagged)
    else:
        kubelet.publish(volume_id, staging, target, cap)
        (target / "note").write_text("in use")
        monkeypatch.setenv(FAULT_ENV, step)
        error = rpc_error(lambda: kubelet.unpublish(volume_id, target))
        assert error.code() == grpc.StatusCode.INTERNAL
        assert (target / "note").read_text() == "in use", "target lost while still mounted"
        assert "umount" in (error.details() or "")
        monkeypatch.delenv(FAULT_ENV)
    assert len(mounts_at(target)) == 1
    kubelet.unpublish(volume_id, target)
    assert not target.exists()
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


@pytest.mark.parametrize("wanted", ["ext4", "xfs"])
def test_make_filesystem_refuses_a_formatted_file(tmp_path: Path, wanted: str) -> None:
    image = tmp_path / "has-data.img"
    with image.open("wb") as fh:
        fh.truncate(32 * MIB)
    made = sh("mkfs.ext4", "-q", "-F", str(image))
    assert made.returncode == 0, made.stderr
    before = head_digest(image)
    with pytest.raises(FormatRefused, match="ext4"):
        make_filesystem(image, wanted)
    assert head_digest(image) == before
    assert fs_type_of(image) == "ext4"


def test_stage_never_reformats_a_foreign_filesystem(kubelet: Kubelet) -> None:
    """An xfs volume whose image holds ext4 is refused at stage, not reformatted."""
    need_tool("mkfs.xfs")
    volume_id = kubelet.create("foreign", XFS)
    image = kubelet.image(volume_id)
    made = sh("mkfs.ext4", "-q", "-F", str(image))
    assert made.returncode == 0, made.stderr
    before = head_digest(image)
    staging = kubelet.staging(volume_id)

    error = rpc_error(lambda: kubelet.stage(volume_id, staging, XFS.cap()))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert head_digest(image) == before
    assert fs_type_of(image) == "ext4"
    assert loops_for(image) == []
    assert not mounts_at(staging)
    kubelet.delete(volume_id)
