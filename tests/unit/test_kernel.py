"""csi.host.kernel, the seam of mounts and loop devices: faults on demand, typed errors.

Injected faults fail before the kernel is asked, so these run without root.
"""

from __future__ import annotations

import errno
from pathlib import Path

import grpc
import pytest

from csi.host import kernel, loopdev, mount
from csi.host.errors import (
    InvalidMountOption,
    LoopFailed,
    MountFailed,
    MountOptionsRefused,
    UnmountFailed,
)
from csi.status import failure_of

Code = grpc.StatusCode


@pytest.fixture
def fail(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(kernel.FAULT_ENV, raising=False)
    return monkeypatch


def test_nothing_is_selected_without_the_variable(fail: pytest.MonkeyPatch) -> None:
    assert not any(kernel.selected(step) for step in kernel.STEPS)


@pytest.mark.parametrize(
    ("value", "chosen"),
    [
        ("mount:bind", {"mount:bind"}),
        ("mount", {"mount:fs", "mount:bind", "mount:remount", "mount:propagation"}),
        ("loop", {s for s in kernel.STEPS if s.startswith("loop:")}),
        ("umount,loop:clear", {"umount", "loop:clear"}),
        ("mount:bin", set()),
    ],
)
def test_a_selector_names_a_step_or_its_family(
    fail: pytest.MonkeyPatch, value: str, chosen: set[str]
) -> None:
    fail.setenv(kernel.FAULT_ENV, value)
    assert {s for s in kernel.STEPS if kernel.selected(s)} == chosen


def test_an_injected_bind_failure_is_a_typed_mount_failure(
    fail: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fail.setenv(kernel.FAULT_ENV, "mount:bind")
    with pytest.raises(MountFailed) as caught:
        mount.bind_mount(tmp_path, tmp_path, read_only=False)
    error = caught.value
    assert (error.step, error.errno) == ("mount:bind", errno.EIO)
    assert error.message.startswith("mount failed (mount:bind")
    assert str(tmp_path) in error.message
    assert failure_of(error, "NodePublishVolume").code is Code.INTERNAL


def test_an_injected_filesystem_mount_failure(fail: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fail.setenv(kernel.FAULT_ENV, "mount:fs")
    with pytest.raises(MountFailed) as caught:
        mount.mount("/dev/loop99", tmp_path, fs_type="ext4", read_only=False, options=["secret=x"])
    assert not isinstance(caught.value, MountOptionsRefused)  # EIO is not the options' fault
    assert "secret" not in caught.value.message


def test_bad_options_are_refused_before_any_call(fail: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fail.setenv(kernel.FAULT_ENV, "mount")  # any call would fail with MountFailed instead
    with pytest.raises(InvalidMountOption) as caught:
        mount.bind_mount(tmp_path, tmp_path, read_only=False, flags=["remount"])
    assert failure_of(caught.value, "NodeStageVolume").code is Code.INVALID_ARGUMENT
    with pytest.raises(InvalidMountOption):
        mount.bind_mount(tmp_path, tmp_path, read_only=False, flags=["x=1"], refuse_fs_options=True)
    with pytest.raises(InvalidMountOption):
        mount.mount("/dev/loop99", tmp_path, fs_type="ext4", read_only=False, options=["bind"])


def test_an_injected_unmount_failure_hits_real_unmounts_only(
    fail: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fail.setenv(kernel.FAULT_ENV, "umount")
    mount.unmount(tmp_path / "nothing-mounted")  # a no-op stays a no-op
    with pytest.raises(UnmountFailed) as caught:
        kernel.umount(str(tmp_path), is_mounted=lambda: True)
    assert caught.value.message.startswith("umount failed at ")


@pytest.mark.parametrize(
    ("step", "call"),
    [
        ("loop:find", lambda image: loopdev.attach(image)),
        ("loop:clear", lambda image: loopdev.detach("/dev/loop99")),
        ("loop:capacity", lambda image: loopdev.refresh_size("/dev/loop99")),
    ],
)
def test_injected_loop_failures_are_typed(
    fail: pytest.MonkeyPatch, tmp_path: Path, step: str, call: object
) -> None:
    image = tmp_path / "a.img"
    image.write_bytes(b"\0" * 4096)
    fail.setenv(kernel.FAULT_ENV, step)
    with pytest.raises(LoopFailed) as caught:
        call(image)  # type: ignore[operator]
    assert (caught.value.step, caught.value.errno) == (step, errno.EIO)
    assert caught.value.message.startswith(f"{step} failed")


def test_a_missing_backing_file_is_a_loop_failure(tmp_path: Path) -> None:
    with pytest.raises(LoopFailed) as caught:
        loopdev.attach(tmp_path / "missing.img")
    assert caught.value.errno == errno.ENOENT


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (MountFailed("mount failed", step="mount:fs", errno=errno.EIO), Code.INTERNAL),
        (MountFailed("mount failed", step="mount:fs", errno=errno.ENOSPC), Code.RESOURCE_EXHAUSTED),
        (
            UnmountFailed("umount failed", step="umount", errno=errno.EBUSY),
            Code.FAILED_PRECONDITION,
        ),
        (LoopFailed("busy", step="loop:configure", errno=errno.EBUSY), Code.FAILED_PRECONDITION),
        (LoopFailed("io", step="loop:configure", errno=errno.EIO), Code.INTERNAL),
        (
            MountOptionsRefused("mount failed", step="mount:fs", errno=errno.EINVAL),
            Code.INVALID_ARGUMENT,
        ),
        (MountFailed("mount failed", step="mount:bind", errno=errno.EINVAL), Code.INTERNAL),
    ],
    ids=lambda v: v.name if isinstance(v, Code) else f"{type(v).__name__}-{v.errno}",
)
def test_syscall_failures_by_errno(error: MountFailed, code: grpc.StatusCode) -> None:
    failure = failure_of(error, "NodeStageVolume")
    assert (failure.code, failure.message, failure.ref) == (code, error.message, None)


def test_loop_config_layout() -> None:
    # struct loop_config: fd, block_size, loop_info64 (232 bytes), 8 reserved __u64.
    assert kernel.LOOP_INFO64.size == 232
    assert kernel.LOOP_CONFIG.size == 304
