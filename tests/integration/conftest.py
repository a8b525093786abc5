"""Integration tier: root, real loop devices and mounts; every test leaves nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import RunningDriver, need_root
from tests.integration.encryption_support import KeyedSession
from tests.integration.support import Kubelet, force_cleanup, loops_under, mounts_under


@pytest.fixture(autouse=True)
def _root_and_no_leftovers(tmp_path: Path) -> Iterator[None]:
    """Needs root; afterwards no mount or loop device under ``tmp_path`` may remain.

    Autouse fixtures are set up first and torn down last, so every driver started by the
    test has already stopped when this runs. Leftovers are cleaned up forcibly before the
    assertion, so one failing test does not poison the next one or the machine.
    """
    need_root()
    yield
    leaked_mounts = mounts_under(tmp_path)
    leaked_loops = loops_under(tmp_path)
    force_cleanup(tmp_path)
    assert not leaked_mounts, f"test left mounts behind: {leaked_mounts}"
    assert not leaked_loops, f"test left loop devices attached: {leaked_loops}"
    assert not mounts_under(tmp_path), "forced cleanup could not unmount everything"


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
