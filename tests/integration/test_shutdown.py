"""The real process: it serves on its socket and leaves cleanly on SIGTERM."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.driver import DriverProcess


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[DriverProcess]:
    """The driver as users start it (no test flags), not yet started; killed at teardown."""
    started = DriverProcess(
        tmp_path / "d", tmp_path / "logs", debug=False, log_file=tmp_path / "driver.log"
    )
    try:
        yield started
    finally:
        started.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_exits_cleanly(driver: DriverProcess, signum: signal.Signals) -> None:
    # Sidecars keep their connection open; shutdown must not wait for them to go: the
    # client's channel stays open until the process has gone.
    driver.start()  # ready: its socket answers Probe with ready
    process = driver.proc
    assert process is not None
    assert process.poll() is None

    started = time.monotonic()
    process.send_signal(signum)
    assert process.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert not driver.socket.exists(), "the socket file outlived the driver"
