"""Online growth of mounted ext4 and xfs loop volumes, in a guest whose root has
CAP_SYS_RESOURCE (tests/guest/growth_cases.py), one boot for the module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guest import growth_cases, machine

CASES = machine.cases(Path(growth_cases.__file__))


@pytest.fixture(scope="module")
def guest() -> machine.Run:
    return machine.run_module(growth_cases)


@pytest.mark.parametrize("case", CASES)
def test_in_guest(guest: machine.Run, case: str) -> None:
    machine.check(guest, case)
