"""csi.host.kernel, the seam of mounts, loop devices and ioctls: faults on demand, typed errors.

Injected faults fail before the kernel is asked, so these run without root. The errno rules
of the ioctls' callers run against the host's own filesystem where it answers (FIEMAP,
FITHAW, FICLONE on the tmp directory's), and against a refusing fcntl.ioctl where it would
take a filesystem the host may not have (fscrypt).
"""

from __future__ import annotations

import errno
import fcntl
import os
import termios
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from csi.config import MIB
from csi.host import copy, extents, freeze, fscrypt, kernel, loopdev, mount, quota
from csi.host.errors import (
    ExtentsUnavailable,
    InvalidMountOption,
    IoctlFailed,
    LoopFailed,
    MountFailed,
    MountOptionsRefused,
    SyscallFailed,
    UnmountFailed,
)
from csi.status import failure_of
from tests.support.prerequisites import need

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
        ("freeze", {"freeze:freeze", "freeze:thaw"}),
        (
            "fscrypt",
            {"fscrypt:add-key", "fscrypt:remove-key", "fscrypt:get-policy", "fscrypt:set-policy"},
        ),
        ("extents,copy", {"extents:map", "copy:clone"}),
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
        ("loop:status", lambda image: kernel.loop_status("/dev/loop99")),
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


# -- ioctl: the one entry point ------------------------------------------------------------
@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe holding 5 bytes: FIONREAD on its read end answers 5, without root."""
    read_end, write_end = os.pipe()
    os.write(write_end, b"12345")
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def test_ioctl_fills_a_bytearray_in_place_and_copies_bytes(
    fail: pytest.MonkeyPatch, pipe: tuple[int, int]
) -> None:
    buffer = bytearray(4)
    assert kernel.ioctl("copy:clone", pipe[0], termios.FIONREAD, buffer, where="a pipe") == 0
    assert int.from_bytes(buffer, "little") == 5
    answer = kernel.ioctl("copy:clone", pipe[0], termios.FIONREAD, bytes(4), where="a pipe")
    assert int.from_bytes(answer, "little") == 5


def test_ioctl_failures_are_typed_with_the_errno(
    fail: pytest.MonkeyPatch, pipe: tuple[int, int]
) -> None:
    with pytest.raises(IoctlFailed) as caught:  # a terminal's request: not a pipe's
        kernel.ioctl("copy:clone", pipe[0], termios.TIOCGWINSZ, bytes(8), where="a pipe")
    error = caught.value
    assert not isinstance(error, LoopFailed)
    assert (error.step, error.errno) == ("copy:clone", errno.ENOTTY)
    assert error.message == f"copy:clone failed on a pipe: {os.strerror(errno.ENOTTY)} [ENOTTY]"
    with pytest.raises(LoopFailed):  # a loop step keeps its own type
        kernel.ioctl("loop:status", pipe[0], termios.TIOCGWINSZ, bytes(8), where="a pipe")


def test_an_injected_ioctl_failure_never_reaches_the_kernel(
    fail: pytest.MonkeyPatch, pipe: tuple[int, int]
) -> None:
    fail.setenv(kernel.FAULT_ENV, "copy")
    buffer = bytearray(4)
    with pytest.raises(IoctlFailed) as caught:
        kernel.ioctl("copy:clone", pipe[0], termios.FIONREAD, buffer, where="a pipe")
    assert (caught.value.step, caught.value.errno) == ("copy:clone", errno.EIO)
    assert buffer == bytearray(4)


# -- the ioctls of fscrypt, freeze, extents and copy ---------------------------------------
KEY = bytes(range(64))
# FIFREEZE is only ever injected here; were injection broken, procfs would refuse the real
# call (EOPNOTSUPP) where the tmp directory's filesystem, the host's root, would freeze.
UNFREEZABLE = "/proc"


def a_file(directory: Path) -> Path:
    path = directory / "data"
    path.write_bytes(os.urandom(8192))
    return path


def freeze_proc(directory: Path) -> None:
    with freeze.frozen([UNFREEZABLE]):
        pass


IOCTL_CALLS: dict[str, Callable[[Path], object]] = {
    "fscrypt:add-key": lambda d: fscrypt.add_key(d, KEY),
    "fscrypt:remove-key": lambda d: fscrypt.remove_key(d, bytes(16)),
    "fscrypt:get-policy": lambda d: fscrypt.policy_identifier(d),
    "fscrypt:set-policy": lambda d: fscrypt.set_policy(d, bytes(16)),
    "freeze:freeze": freeze_proc,
    "freeze:thaw": lambda d: freeze.thaw(str(d)),
    "extents:map": lambda d: extents.mapping(a_file(d)),
    "copy:clone": lambda d: copy.clone_or_copy(a_file(d), d / "copy"),
}


def hold_to_limits(directory: Path) -> None:
    with quota.held_to_limits():
        pass


# The quota steps (quotactl_fd, fsxattr, capabilities): injected before the kernel is asked,
# so they fail the same way on this host, whose kernel has no project quotas.
QUOTA_CALLS: dict[str, Callable[[Path], object]] = {
    "quota:state": quota.support,
    "quota:get": lambda d: quota.charge(d, 1),
    "quota:limit": lambda d: quota.limit(d, 1, MIB, 0, step="quota:limit"),
    "quota:grow": lambda d: quota.limit(d, 1, MIB, 0, step="quota:grow"),
    "quota:lift": lambda d: quota.limit(d, 1, 0, 0, step="quota:lift"),
    "fsxattr:get": quota.project_of,
    "fsxattr:set": lambda d: quota.assign(d, 1),
    "capability:set-aside": hold_to_limits,
}


def injected(
    fail: pytest.MonkeyPatch, step: str, call: Callable[[], object], kind: type[SyscallFailed]
) -> SyscallFailed:
    """The error ``call`` fails with when CSI_FAIL_SYSCALL selects ``step``: of ``kind``,
    naming the step, EIO."""
    fail.setenv(kernel.FAULT_ENV, step)
    with pytest.raises(kind) as caught:
        call()
    assert (caught.value.step, caught.value.errno) == (step, errno.EIO)
    return caught.value


@pytest.mark.parametrize("step", sorted(QUOTA_CALLS))
def test_injected_quota_failures_are_typed(
    fail: pytest.MonkeyPatch, tmp_path: Path, step: str
) -> None:
    error = injected(fail, step, lambda: QUOTA_CALLS[step](tmp_path), SyscallFailed)
    where = "capability 24" if step.startswith("capability") else tmp_path
    assert error.message.startswith(f"{step} failed on {where}")
    assert failure_of(error, "CreateVolume").code is Code.INTERNAL


def test_every_ioctl_step_is_failed_here() -> None:
    loops = {"loop:find", "loop:clear", "loop:capacity", "loop:status"}
    covered = {*IOCTL_CALLS, *QUOTA_CALLS, *loops}
    mounts = {"mount:fs", "mount:bind", "mount:remount", "mount:propagation", "umount"}
    # loop:configure would first take a real free device: tests/reliability fail it.
    assert covered == kernel.STEPS - mounts - {"loop:configure"}


@pytest.mark.parametrize("step", sorted(IOCTL_CALLS))
def test_injected_ioctl_failures_are_typed(
    fail: pytest.MonkeyPatch, tmp_path: Path, step: str
) -> None:
    error = injected(fail, step, lambda: IOCTL_CALLS[step](tmp_path), IoctlFailed)
    where = UNFREEZABLE if step == "freeze:freeze" else tmp_path
    assert error.message.startswith(f"{step} failed on {where}")
    assert error.message.endswith(f"(injected by {kernel.FAULT_ENV}={step}) [EIO]")
    assert failure_of(error, "CreateSnapshot").code is Code.INTERNAL


@pytest.mark.parametrize("family", ["freeze", "fscrypt"])
def test_a_family_fails_each_of_its_steps(
    fail: pytest.MonkeyPatch, tmp_path: Path, family: str
) -> None:
    fail.setenv(kernel.FAULT_ENV, family)
    steps = [s for s in IOCTL_CALLS if s.startswith(family + ":")]
    for step in steps:
        with pytest.raises(IoctlFailed) as caught:
            IOCTL_CALLS[step](tmp_path)
        assert caught.value.step == step
    assert len(steps) == len([s for s in kernel.STEPS if s.startswith(family + ":")])


def test_the_add_key_failure_names_no_key(fail: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fail.setenv(kernel.FAULT_ENV, "fscrypt:add-key")
    with pytest.raises(IoctlFailed) as caught:
        fscrypt.add_key(tmp_path, KEY)
    assert KEY.hex() not in caught.value.message
    assert repr(KEY) not in caught.value.message


def refusing(monkeypatch: pytest.MonkeyPatch, request: int, code: int) -> None:
    """fcntl.ioctl refuses ``request`` with ``code``; other requests reach the kernel."""
    real = fcntl.ioctl

    def ioctl(fd: int, asked: int, *args: object) -> object:
        if asked == request:
            raise OSError(code, os.strerror(code))
        return real(fd, asked, *args)  # type: ignore[call-overload]

    monkeypatch.setattr(fcntl, "ioctl", ioctl)


def test_a_key_already_gone_is_removed(fail: pytest.MonkeyPatch, tmp_path: Path) -> None:
    refusing(fail, fscrypt._REMOVE_KEY, errno.ENOKEY)
    fscrypt.remove_key(tmp_path, bytes(16))


def test_a_directory_without_a_policy_is_unencrypted(
    fail: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    refusing(fail, fscrypt._GET_POLICY_EX, errno.ENODATA)
    assert fscrypt.policy_identifier(tmp_path) is None


def test_a_filesystem_without_fscrypt_is_a_typed_failure(
    fail: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    refusing(fail, fscrypt._GET_POLICY_EX, errno.EOPNOTSUPP)
    with pytest.raises(IoctlFailed) as caught:
        fscrypt.policy_identifier(tmp_path)
    assert (caught.value.step, caught.value.errno) == ("fscrypt:get-policy", errno.EOPNOTSUPP)


def test_thawing_a_filesystem_that_is_not_frozen(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "FITHAW needs CAP_SYS_ADMIN")
    assert freeze.thaw(str(tmp_path)) is False  # EINVAL: not frozen


def test_extents_of_a_file(tmp_path: Path) -> None:
    path = a_file(tmp_path)
    try:
        found = extents.mapping(path)
    except ExtentsUnavailable:
        pytest.skip("the tmp directory's filesystem has no FIEMAP")
    assert sum(e.length for e in found) >= 8192


@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL])
def test_a_filesystem_without_fiemap_has_no_extents(
    fail: pytest.MonkeyPatch, tmp_path: Path, code: int
) -> None:
    refusing(fail, extents.FS_IOC_FIEMAP, code)
    with pytest.raises(ExtentsUnavailable):
        extents.mapping(a_file(tmp_path))


def test_procfs_has_no_extents() -> None:
    with pytest.raises(ExtentsUnavailable):  # the kernel's own EOPNOTSUPP
        extents.mapping("/proc/self/status")


def test_a_copy_is_a_reflink_where_the_filesystem_clones(tmp_path: Path) -> None:
    source = a_file(tmp_path)
    method = copy.clone_or_copy(source, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == source.read_bytes()
    assert method == "sparse" if fs_type_of(tmp_path) == "ext4" else method in ("reflink", "sparse")


def fs_type_of(path: Path) -> str:
    """The type of the filesystem ``path`` is on: the mount on its longest prefix (the
    last one there, if mounts are stacked)."""
    holding = [m for m in mount.read_mounts() if path.is_relative_to(m.mount_point)]
    return max(reversed(holding), key=lambda m: len(m.mount_point)).fs_type


@pytest.mark.parametrize("code", copy.CANNOT_CLONE, ids=kernel.errno_name)
def test_a_filesystem_that_cannot_clone_copies_sparse(
    fail: pytest.MonkeyPatch, tmp_path: Path, code: int
) -> None:
    refusing(fail, copy.FICLONE, code)
    source = tmp_path / "sparse"
    with source.open("wb") as fh:
        fh.truncate(16 * 1024 * 1024)
        fh.write(b"head")
    assert copy.clone_or_copy(source, tmp_path / "copy") == "sparse"
    assert (tmp_path / "copy").read_bytes() == source.read_bytes()
    assert extents.data_ranges(tmp_path / "copy") == extents.data_ranges(source)


def test_a_clone_on_a_full_disk_is_resource_exhausted(
    fail: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    refusing(fail, copy.FICLONE, errno.ENOSPC)
    with pytest.raises(IoctlFailed) as caught:
        copy.clone_or_copy(a_file(tmp_path), tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    assert failure_of(caught.value, "CreateSnapshot").code is Code.RESOURCE_EXHAUSTED


def test_a_tree_copy_copies_whatever_the_clone_says(
    fail: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fail.setenv(kernel.FAULT_ENV, "copy:clone")  # as a real EIO would: the file is read
    (tmp_path / "tree").mkdir()
    a_file(tmp_path / "tree")
    copy.copy_tree(tmp_path / "tree", tmp_path / "copy")
    assert (tmp_path / "copy" / "data").read_bytes() == (tmp_path / "tree" / "data").read_bytes()
