"""Directory volumes held to their size, on a kernel that has project quotas: one guest
boot (tests/guest/machine.py) runs every case of tests/guest/quota_cases.py on xfs and on
ext4; each case is a test here, failing with the guest's report and console when it failed
there, or when the guest never reported it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guest import machine, quota_cases

CASES = machine.cases(Path(quota_cases.__file__))


@pytest.fixture(scope="module")
def guest() -> machine.Run:
    return machine.run_module(quota_cases)


@pytest.mark.parametrize("case", CASES)
def test_in_guest(guest: machine.Run, case: str) -> None:
    machine.check(guest, case)
