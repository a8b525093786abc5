"""Access modes and mount options, as the process inside the pod experiences them."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import grpc
import pytest

from tests.support.host import mounts_at
from tests.support.kubelet import DIRECTORY, EXT4, READER_ONLY, SINGLE_WRITER, Flavour, Kubelet
from tests.support.status import status_of

MOUNTABLE = pytest.mark.parametrize("flavour", [EXT4, DIRECTORY], ids=lambda f: f.id)


def assert_read_only(directory: Path) -> None:
    with pytest.raises(OSError, match="Read-only") as caught:
        (directory / "denied.txt").write_text("must not land")
    assert caught.value.errno == errno.EROFS
    assert not (directory / "denied.txt").exists()


def only_mount(path: Path) -> tuple[str, ...]:
    (entry,) = mounts_at(path)
    return entry.options


@MOUNTABLE
def test_readonly_publish_beside_a_writer(kubelet: Kubelet, flavour: Flavour) -> None:
    cap = flavour.cap()
    volume_id = kubelet.create("ro-beside-rw", flavour)
    staging = kubelet.staging(volume_id)
    reader, writer = kubelet.target("reader"), kubelet.target("writer")
    kubelet.stage(volume_id, staging, cap)
    kubelet.publish(volume_id, staging, reader, cap, readonly=True)
    kubelet.publish(volume_id, staging, writer, cap)

    assert "ro" in only_mount(reader)
    assert "rw" in only_mount(writer)
    assert_read_only(reader)
    (writer / "news").write_text("fresh")
    assert (reader / "news").read_text() == "fresh"
    with pytest.raises(OSError, match="Read-only") as caught:
        os.open(reader / "news", os.O_WRONLY | os.O_APPEND)
    assert caught.value.errno == errno.EROFS

    kubelet.unpublish(volume_id, reader)
    kubelet.unpublish(volume_id, writer)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


@MOUNTABLE
def test_reader_only_mode_mounts_read_only(kubelet: Kubelet, flavour: Flavour) -> None:
    volume_id = kubelet.create("reader-only", flavour)
    staging = kubelet.staging(volume_id)
    target = kubelet.target("viewer")
    # Put some content in first, through an ordinary writable stage.
    kubelet.stage(volume_id, staging, flavour.cap())
    kubelet.publish(volume_id, staging, target, flavour.cap())
    (target / "catalogue").write_text("read me")
    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)

    cap = flavour.cap(READER_ONLY)
    kubelet.stage(volume_id, staging, cap)
    kubelet.publish(volume_id, staging, target, cap)
    assert "ro" in only_mount(target)
    assert (target / "catalogue").read_text() == "read me"
    assert_read_only(target)
    if flavour.fs_type:  # a directory's stage mounts nothing
        assert "ro" in only_mount(staging)
        assert_read_only(staging)

    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


@MOUNTABLE
def test_a_read_only_access_mode_wins_over_an_rw_flag(kubelet: Kubelet, flavour: Flavour) -> None:
    """``rw`` among a class's mount options never makes a read-only volume writable: not
    at stage (the filesystem's mount) and not at publish (the bind into the pod)."""
    volume_id = kubelet.create("rw-flag-reader", flavour)
    staging = kubelet.staging(volume_id)
    reader_only = flavour.cap(READER_ONLY, flags=("rw",))
    kubelet.stage(volume_id, staging, reader_only)
    reader = kubelet.target("reader")
    kubelet.publish(volume_id, staging, reader, reader_only)
    if flavour.fs_type:
        assert "ro" in only_mount(staging)
        assert_read_only(staging)
    assert "ro" in only_mount(reader)
    assert_read_only(reader)
    kubelet.unpublish(volume_id, reader)
    kubelet.unstage(volume_id, staging)

    writable = flavour.cap(flags=("rw",))
    kubelet.stage(volume_id, staging, writable)
    kubelet.publish(volume_id, staging, reader, writable, readonly=True)
    assert "ro" in only_mount(reader)
    assert_read_only(reader)
    kubelet.unpublish(volume_id, reader)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


@MOUNTABLE
@pytest.mark.parametrize("flag", ["noexec", "nosuid"])
def test_mount_flags_reach_the_target(kubelet: Kubelet, flavour: Flavour, flag: str) -> None:
    cap = flavour.cap(flags=(flag,))
    volume_id = kubelet.create(f"flags-{flag}", flavour)
    staging = kubelet.staging(volume_id)
    target = kubelet.target("flagged")
    kubelet.stage(volume_id, staging, cap)
    kubelet.publish(volume_id, staging, target, cap)

    assert flag in only_mount(target)
    assert "rw" in only_mount(target)
    script = target / "run.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    if flag == "noexec":
        with pytest.raises(PermissionError):
            _run(script)
    else:
        assert _run(script) == 0

    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


def _run(script: Path) -> int:
    return subprocess.run([str(script)], check=False).returncode


@MOUNTABLE
def test_single_writer_refuses_a_second_target(kubelet: Kubelet, flavour: Flavour) -> None:
    cap = flavour.cap(SINGLE_WRITER)
    volume_id = kubelet.create("single-writer", flavour)
    staging = kubelet.staging(volume_id)
    first, second = kubelet.target("first"), kubelet.target("second")
    kubelet.stage(volume_id, staging, cap)
    kubelet.publish(volume_id, staging, first, cap)

    code = status_of(lambda: kubelet.publish(volume_id, staging, second, cap))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert not second.exists(), "a refused publish must not create the target path"
    (first / "mine").write_text("still writable")
    assert len(mounts_at(first)) == 1

    # Once the first pod is gone, the second may have it.
    kubelet.unpublish(volume_id, first)
    kubelet.publish(volume_id, staging, second, cap)
    assert (second / "mine").read_text() == "still writable"
    kubelet.unpublish(volume_id, second)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


@MOUNTABLE
def test_delete_refused_while_published_or_staged(kubelet: Kubelet, flavour: Flavour) -> None:
    cap = flavour.cap()
    volume_id = kubelet.create("in-use", flavour)
    artefact = kubelet.artefact(volume_id, flavour)
    staging = kubelet.staging(volume_id)
    target = kubelet.target("user")
    kubelet.stage(volume_id, staging, cap)
    kubelet.publish(volume_id, staging, target, cap)
    (target / "precious").write_text("keep me")

    delete = lambda: kubelet.delete(volume_id)  # noqa: E731
    assert status_of(delete) == grpc.StatusCode.FAILED_PRECONDITION
    kubelet.unpublish(volume_id, target)
    assert status_of(delete) == grpc.StatusCode.FAILED_PRECONDITION

    assert artefact.exists()
    assert kubelet.record(volume_id).is_file()
    assert len(mounts_at(staging)) == (1 if flavour.fs_type else 0)  # a directory: none
    kubelet.publish(volume_id, staging, target, cap)
    assert (target / "precious").read_text() == "keep me"
    assert stat.S_ISDIR(os.stat(target).st_mode)

    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)
    assert not artefact.exists()
