"""The real process: it serves on its socket and leaves cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from csi.pb import csi_pb2, csi_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def driver_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    data_dir = tmp_path / "d"
    log = (tmp_path / "driver.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "csi", "--data-dir", str(data_dir), "--node-id", "n1"],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process, data_dir / "csi.sock"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        log.close()


def wait_until_ready(identity: csi_pb2_grpc.IdentityStub, socket: Path, deadline: float) -> None:
    while not socket.exists():
        assert time.monotonic() < deadline, f"{socket} never appeared"
        time.sleep(0.05)
    while True:
        try:
            if identity.Probe(csi_pb2.ProbeRequest(), timeout=2).ready.value:
                return
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, "the driver never reported ready"
        time.sleep(0.1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_exits_cleanly(
    driver_process: tuple[subprocess.Popen[bytes], Path], signum: signal.Signals
) -> None:
    process, socket = driver_process
    # Sidecars keep their connection open; shutdown must not wait for them to go.
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        identity = csi_pb2_grpc.IdentityStub(channel)
        wait_until_ready(identity, socket, time.monotonic() + 30)
        assert process.poll() is None

        started = time.monotonic()
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
    assert not socket.exists(), "the socket file outlived the driver"
