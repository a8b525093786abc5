"""Reliability tier: root, real loop devices and mounts, the driver as a separate process.

Every test, whoever wrote it, must leave no mount and no loop device under its tmp_path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import need_root
from tests.reliability.driver_process import DriverProcess
from tests.reliability.fuzz_strategies import SEED, SEED_ENV
from tests.reliability.host_checks import clean_up_host, leftovers


def pytest_report_header() -> str:
    return f"fuzz seed: {SEED} (replay with {SEED_ENV}={SEED})"


@pytest.fixture(autouse=True)
def _root_and_no_leftovers(tmp_path: Path) -> Iterator[None]:
    """Needs root; afterwards no mount point and no loop device under ``tmp_path`` remains.

    Autouse fixtures are set up first and torn down last, so drivers started by the test
    have stopped when this runs. Leftovers are removed by force (thawing first, so a frozen
    filesystem cannot hang the unmount) before the assertion, so one failure stays local.
    """
    need_root()
    yield
    leaked_mounts, leaked_loops = leftovers(tmp_path)
    clean_up_host(tmp_path)
    assert not leaked_mounts, f"test left mounts behind: {leaked_mounts}"
    assert not leaked_loops, f"test left loop devices attached: {leaked_loops}"
    assert leftovers(tmp_path) == ([], []), "forced cleanup could not remove everything"


@pytest.fixture
def driver_process(tmp_path: Path) -> Iterator[DriverProcess]:
    """A driver subprocess (not yet started) on ``tmp_path/data``; killed at teardown."""
    driver = DriverProcess(tmp_path / "data", tmp_path / "logs", tmp_path / "kubelet")
    try:
        yield driver
    finally:
        driver.kill()
