"""Directory volumes held to their size, on a kernel that has project quotas: one guest
boot (tests/guest/machine.py) runs every case of tests/guest/quota_cases.py on xfs and on
ext4; each case is a test here, failing with the guest's report and console when it failed
there, or when the guest never reported it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guest import machine, quota_cases
from tests.support.prerequisites import need, need_root

CASES = machine.cases(Path(quota_cases.__file__))


@pytest.fixture(scope="module")
def guest() -> machine.Run:
    need_root()
    need(machine.available(), f"needs {machine.KERNEL} (Debian's user-mode-linux package)")
    tests = Path(quota_cases.__file__).relative_to(machine.REPO)
    with machine.work_dir() as work:
        return machine.boot(tests, list(quota_cases.FILESYSTEMS), work)


@pytest.mark.parametrize("case", CASES)
def test_in_guest(guest: machine.Run, case: str) -> None:
    machine.check(guest, case)
