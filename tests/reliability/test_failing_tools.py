"""Failing host steps: one tool or one system call fails; the call says so and rolls back.

Forked tools (mkfs.ext4, resize2fs) fail through a shim first on the driver's PATH; mounts,
unmounts and ioctls (loop devices, a snapshot's freeze, thaw and clone), which fork nothing,
fail through the seam's CSI_FAIL_SYSCALL (csi.host.kernel) naming one step. For every RPC
that takes such a step, the call must fail with INTERNAL or FAILED_PRECONDITION (never
UNKNOWN) naming the tool or the step, and leave host and record as they were (no new loop
device, mount, target or scratch file; the record byte-for-byte). After a restart without
the fault, the orchestrator's retry succeeds and the volume lives on to a clean delete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from csi.host.kernel import FAULT_ENV, STEPS
from csi.host.tools import HOST_TOOLS
from tests.reliability.lifecycle import BLOCK, EXT4, Life
from tests.support.driver import DriverProcess
from tests.support.host import loops_for, mounts_under
from tests.support.invariants import image_path, scratch_files
from tests.support.kubelet import DIRECTORY, Flavour
from tests.support.status import rpc_error

IN_USE = ("create", "stage", "publish", "write")


@dataclass(frozen=True)
class Case:
    tool: str  # a program of csi.host.tools, or a step of csi.host.kernel
    flavour: Flavour
    setup: tuple[str, ...]
    op: str

    @property
    def id(self) -> str:
        return f"{self.tool}-{self.op}-{self.flavour.id}"

    @property
    def syscall(self) -> bool:
        return self.tool in STEPS


CASES = [
    # A directory volume's stage and unstage take no host step (publish binds its directory
    # straight onto the target), so its bind and umount fail at publish and unpublish.
    Case("mkfs.ext4", EXT4, (), "create"),
    Case("loop:find", EXT4, ("create",), "stage"),
    Case("loop:configure", EXT4, ("create",), "stage"),
    Case("loop:configure", BLOCK, ("create",), "stage"),
    Case("mount:fs", EXT4, ("create",), "stage"),
    Case("mount:bind", EXT4, ("create", "stage"), "publish"),
    Case("mount:bind", BLOCK, ("create", "stage"), "publish"),
    Case("mount:bind", DIRECTORY, ("create", "stage"), "publish"),
    Case("resize2fs", EXT4, ("create", "expand"), "stage"),
    Case("resize2fs", EXT4, (*IN_USE, "expand"), "node-expand"),
    Case("loop:capacity", BLOCK, IN_USE, "expand"),
    Case("umount", EXT4, IN_USE, "unpublish"),
    Case("umount", DIRECTORY, IN_USE, "unpublish"),
    Case("umount", BLOCK, IN_USE, "unpublish"),
    Case("umount", EXT4, (*IN_USE, "unpublish"), "unstage"),
    Case("loop:clear", EXT4, (*IN_USE, "unpublish"), "unstage"),
    Case("loop:clear", BLOCK, (*IN_USE, "unpublish"), "unstage"),
    # A snapshot of a staged filesystem freezes it around the copy of its image. A failed
    # thaw leaves it frozen, as a crash there would: the restart's reconciliation thaws it.
    Case("freeze:freeze", EXT4, IN_USE, "snapshot"),
    Case("freeze:thaw", EXT4, IN_USE, "snapshot"),
    Case("copy:clone", EXT4, IN_USE, "snapshot"),
]
# Steps a lifecycle of Life's takes only with flags (remount: tests/integration/
# test_failures.py), never (propagation: no caller asks for it), only for an encrypted
# volume (fscrypt: tests/integration/test_encryption.py), only with a device of the image
# already bound (loop:status) or only for GetMetadataDelta (extents:map); the last two
# fail in tests/unit/test_kernel.py and test_loopdev.py.
ELSEWHERE = {
    "mount:remount",
    "mount:propagation",
    "fscrypt:add-key",
    "fscrypt:remove-key",
    "fscrypt:get-policy",
    "fscrypt:set-policy",
    "loop:status",
    "extents:map",
    # A kernel with project quotas (tests/guest/quota_cases.py fails assign, limit, grow and
    # lift with rollback checked; tests/unit/test_kernel.py fails every quota step).
    "fsxattr:get",
    "fsxattr:set",
    "quota:state",
    "quota:get",
    "quota:limit",
    "quota:grow",
    "quota:lift",
    "capability:set-aside",
}


def make_shim(directory: Path, tool: str) -> Path:
    directory.mkdir(exist_ok=True)
    shim = directory / tool
    shim.write_text(f"#!/bin/sh\necho '{tool}: simulated failure' >&2\nexit 1\n")
    shim.chmod(0o755)
    return directory


def host_view(life: Life) -> dict[str, object]:
    """What a failed call must not change."""
    record = life.data_dir / "state" / "volumes" / f"{life.volume_id}.json"
    image = image_path(life.data_dir, life.volume_id)
    return {
        "record": record.read_bytes() if record.exists() else None,
        "loops": loops_for(image),
        "mounts": mounts_under(life.driver.kubelet_root),
        "target": life.target.exists(),
        "scratch": scratch_files(life.data_dir),
        "images": sorted(p.name for p in (life.data_dir / "images").iterdir()),
        "volumes": sorted(p.name for p in (life.data_dir / "volumes").iterdir()),
    }


def test_every_tool_and_step_is_covered() -> None:
    # blkid only runs to name what sits on a damaged image, which is refused before any
    # tool could fail (tests/integration/test_damaged_image.py); xfs tools and e2fsck run
    # only for xfs volumes or a grown ext4 (tests/integration/test_failures.py, test_expand).
    tools = {c.tool for c in CASES if not c.syscall}
    assert tools == {"mkfs.ext4", "resize2fs"}
    assert tools <= set(HOST_TOOLS)
    assert {c.tool for c in CASES if c.syscall} == STEPS - ELSEWHERE


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_failing_step_rolls_back_and_retry_succeeds(
    driver_process: DriverProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Case
) -> None:
    life = Life(driver_process, case.flavour)
    if case.setup:
        driver_process.start()
        for step in case.setup:
            life.do(step)
        assert driver_process.stop() == 0

    if case.syscall:
        monkeypatch.setenv(FAULT_ENV, case.tool)  # the driver's environment is ours, copied
        driver_process.start()
        monkeypatch.delenv(FAULT_ENV)
    else:
        driver_process.start(path_prefix=make_shim(tmp_path / "shims", case.tool))
    before = host_view(life)
    error = rpc_error(lambda: life.do(case.op))
    codes = (grpc.StatusCode.INTERNAL, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code() in codes, (error.code(), error.details())
    assert case.tool in (error.details() or ""), f"error does not name {case.tool}"
    after = host_view(life)
    record_changed = after.pop("record") != before.pop("record")
    if case.op == "unstage" and case.tool == "loop:clear":
        # The unmount went through and the detach did not: nothing to roll back, but the
        # record must still cover the loop device that is left.
        assert after["mounts"] == []
        assert after["loops"] == before["loops"]
    else:
        changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
        assert not changed, f"the failed call changed the host: {changed}"
    assert driver_process.stop() == 0

    driver_process.start()
    if case.op == "node-expand":
        life.verify_growth()
    else:
        life.do(case.op)
    life.verify(case.op)
    life.finish()
    assert driver_process.stop() == 0
    # Checked last, so that a failure here still cleans the volume up through the driver.
    assert not record_changed, "the failed call left its change in the volume's record"
