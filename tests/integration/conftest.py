"""Integration tier: root, real loop devices and mounts; every test leaves nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.encryption_support import KeyedSession
from tests.support.driver import RunningDriver
from tests.support.invariants import no_leftovers
from tests.support.kubelet import Kubelet


@pytest.fixture(autouse=True)
def _root_and_no_leftovers(tmp_path: Path) -> Iterator[None]:
    """Needs root; afterwards no mount and no loop device under ``tmp_path`` may remain.

    Autouse fixtures are set up first and torn down last, so every driver started by the
    test has stopped when this runs (tests.support.invariants.no_leftovers).
    """
    with no_leftovers(tmp_path):
        yield


@pytest.fixture
def kubelet(driver: RunningDriver, tmp_path: Path) -> Kubelet:
    """Caller-side paths under ``tmp_path/kubelet``, outside the driver's data dir."""
    return Kubelet(driver.client, tmp_path / "kubelet", driver.data_dir)


@pytest.fixture
def session(kubelet: Kubelet) -> Iterator[KeyedSession]:
    """Volumes made through the driver, all undone at the end even if the test fails."""
    started = KeyedSession(kubelet)
    try:
        yield started
    finally:
        started.tidy()
