"""Reliability tier: root, real loop devices and mounts, the driver as a separate process.

Every test, whoever wrote it, must leave no mount and no loop device under its tmp_path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.fuzz_strategies import SEED, SEED_ENV
from tests.support.driver import DriverProcess
from tests.support.invariants import no_leftovers


def pytest_report_header() -> str:
    return f"fuzz seed: {SEED} (replay with {SEED_ENV}={SEED})"


@pytest.fixture(autouse=True)
def _root_and_no_leftovers(tmp_path: Path) -> Iterator[None]:
    """Needs root; afterwards no mount and no loop device under ``tmp_path`` may remain.

    Autouse fixtures are set up first and torn down last, so every driver started by the
    test has stopped when this runs (tests.support.invariants.no_leftovers).
    """
    with no_leftovers(tmp_path):
        yield


@pytest.fixture
def driver_process(tmp_path: Path) -> Iterator[DriverProcess]:
    """A driver subprocess (not yet started) on ``tmp_path/data``; killed at teardown."""
    driver = DriverProcess(tmp_path / "data", tmp_path / "logs", tmp_path / "kubelet")
    try:
        yield driver
    finally:
        driver.kill()
