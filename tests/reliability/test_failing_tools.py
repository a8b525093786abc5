"""Failing host tools: a PATH shim makes one tool fail; the call says so and rolls back.

For every RPC that runs losetup, mkfs.ext4, mount, resize2fs or blkid: with a failing shim
first on the driver's PATH the call must fail with INTERNAL or FAILED_PRECONDITION (never
UNKNOWN) naming the tool, and leave host and record as they were (no new loop device,
mount, target or scratch file; the record byte-for-byte). After a restart without the shim,
the orchestrator's retry succeeds and the volume lives on to a clean delete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.reliability.lifecycle import BLOCK, EXT4, Life
from tests.support.driver import DriverProcess
from tests.support.host import loops_for, mounts_under
from tests.support.invariants import image_path, scratch_files
from tests.support.kubelet import DIRECTORY, Flavour
from tests.support.status import rpc_error

IN_USE = ("create", "stage", "publish", "write")


@dataclass(frozen=True)
class Case:
    tool: str
    flavour: Flavour
    setup: tuple[str, ...]
    op: str

    @property
    def id(self) -> str:
        return f"{self.tool}-{self.op}-{self.flavour.id}"


CASES = [
    Case("mkfs.ext4", EXT4, (), "create"),
    Case("losetup", EXT4, ("create",), "stage"),
    Case("losetup", BLOCK, ("create",), "stage"),
    Case("mount", EXT4, ("create",), "stage"),
    Case("mount", DIRECTORY, ("create",), "stage"),
    Case("mount", EXT4, ("create", "stage"), "publish"),
    Case("mount", BLOCK, ("create", "stage"), "publish"),
    Case("mount", DIRECTORY, ("create", "stage"), "publish"),
    Case("resize2fs", EXT4, ("create", "expand"), "stage"),
    Case("resize2fs", EXT4, (*IN_USE, "expand"), "node-expand"),
    Case("losetup", BLOCK, IN_USE, "expand"),
    Case("losetup", EXT4, (*IN_USE, "unpublish"), "unstage"),
]


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


def test_every_tool_is_covered() -> None:
    # blkid only runs to name what sits on a damaged image, which is refused before any
    # tool could fail (tests/integration/test_damaged_image.py).
    assert {c.tool for c in CASES} == {"losetup", "mkfs.ext4", "mount", "resize2fs"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_failing_tool_rolls_back_and_retry_succeeds(
    driver_process: DriverProcess, tmp_path: Path, case: Case
) -> None:
    life = Life(driver_process, case.flavour)
    if case.setup:
        driver_process.start()
        for step in case.setup:
            life.do(step)
        assert driver_process.stop() == 0

    driver_process.start(path_prefix=make_shim(tmp_path / "shims", case.tool))
    before = host_view(life)
    error = rpc_error(lambda: life.do(case.op))
    codes = (grpc.StatusCode.INTERNAL, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code() in codes, (error.code(), error.details())
    assert case.tool in (error.details() or ""), f"error does not name {case.tool}"
    after = host_view(life)
    record_changed = after.pop("record") != before.pop("record")
    if case.op == "unstage":
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
