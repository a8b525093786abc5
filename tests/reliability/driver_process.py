"""The driver as a separate process, the way a node runs it: start, probe, kill, restart.

Crash points (csi.faults) kill the process with SIGKILL, so these tests cannot run the
server in-process: each start is ``python -m csi`` with its own environment (an optional
``CSI_FAULT_POINT``, an optional PATH shim directory first on PATH) and its own log file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from csi.faults import ENV as FAULT_ENV
from csi.pb import csi_pb2, csi_pb2_grpc
from tests.helpers import Client
from tests.integration.support import Kubelet

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 20.0
T = TypeVar("T")


class DriverProcess:
    """One node's driver: a data directory, a log directory and at most one live process."""

    def __init__(self, data_dir: Path, log_dir: Path, kubelet_root: Path) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.kubelet_root = kubelet_root
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        self._client: Client | None = None
        self.starts = 0
        log_dir.mkdir(parents=True, exist_ok=True)

    # -- life cycle ----------------------------------------------------------------
    @property
    def socket(self) -> Path:
        return self.data_dir / "csi.sock"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"driver-{self.starts}.log"

    def start(
        self, *, fault: str = "", path_prefix: Path | None = None, args: Sequence[str] = ()
    ) -> Client:
        """Start the driver and wait until Probe reports it ready (reconciled)."""
        assert self.proc is None or self.proc.poll() is not None, "driver already running"
        self.starts += 1
        env = dict(os.environ)
        env.pop(FAULT_ENV, None)
        if fault:
            env[FAULT_ENV] = fault
        if path_prefix is not None:
            env["PATH"] = f"{path_prefix}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(args),
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self._wait_ready()
        return self.client

    def command(self, args: Sequence[str]) -> list[str]:
        """The driver's argv; a subclass may run it elsewhere (another mount namespace)."""
        return driver_argv(self.data_dir, args)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"driver exited ({self.proc.returncode}) at start:\n{self.log()}")
            if self.socket.exists():
                self._connect()
                try:
                    reply = self.client.identity.Probe(csi_pb2.ProbeRequest(), timeout=2)
                    if reply.ready.value:
                        return
                except grpc.RpcError as exc:
                    if "start-up failed" in (exc.details() or ""):
                        pytest.fail(f"driver start-up failed: {exc.details()}\n{self.log()}")
            time.sleep(0.05)
        pytest.fail(f"driver not ready within {READY_TIMEOUT}s:\n{self.log()}")

    def _connect(self) -> None:
        if self._client is not None:
            return
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self._client = Client(
            identity=csi_pb2_grpc.IdentityStub(self.channel),
            controller=csi_pb2_grpc.ControllerStub(self.channel),
            node=csi_pb2_grpc.NodeStub(self.channel),
            channel=self.channel,
        )

    def _disconnect(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.channel = None
        self._client = None

    @property
    def client(self) -> Client:
        assert self._client is not None, "driver is not running"
        return self._client

    @property
    def kubelet(self) -> Kubelet:
        """A kubelet/provisioner stand-in bound to the current process's connection."""
        return Kubelet(self.client, self.kubelet_root, self.data_dir)

    def stop(self) -> int:
        """SIGTERM, as on a rolling update; returns the exit status.

        SIGTERM is sent again every second: the kernel may hand a process-directed signal
        to any thread, and the driver then never notices it (a bug of its own, exposed by
        test_crash_points.test_sigterm_to_any_thread_stops_the_driver); the other tests
        are about other things and must not fail at random on it.
        """
        self._disconnect()
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                continue
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=15)
            pytest.fail("driver ignored SIGTERM for 20 s")
        return proc.returncode

    def thread_ids(self) -> list[int]:
        """The driver's threads other than the main one."""
        assert self.proc is not None
        pid = self.proc.pid
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)

    def kill(self) -> None:
        """Best-effort SIGKILL for test teardown."""
        self._disconnect()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self.proc = None

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the process to end by itself (a crash point) and return its status."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        self._disconnect()
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
            pytest.fail(f"driver still running {timeout:.0f} s after the crash point")

    def restart(self, *, fault: str = "", path_prefix: Path | None = None) -> Client:
        self.stop()
        return self.start(fault=fault, path_prefix=path_prefix)

    # -- logs ----------------------------------------------------------------------
    def log(self) -> str:
        """The current (or last) start's stderr."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def all_logs(self) -> str:
        paths = sorted(self.log_dir.glob("driver-*.log"), key=lambda p: p.stat().st_mtime)
        return "\n".join(p.read_text(errors="replace") for p in paths)


def driver_argv(data_dir: Path, args: Sequence[str] = ()) -> list[str]:
    """``python -m csi`` serving ``data_dir`` (a path as the driver's process sees it)."""
    argv = [sys.executable, "-m", "csi", "--data-dir", str(data_dir)]
    return [*argv, "--node-id", "n1", "--log-level", "debug", "--shutdown-grace", "2", *args]


def error_of(call: Callable[[], object]) -> grpc.RpcError | None:
    """The RpcError ``call`` fails with, or None if it succeeds."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc
    return None


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """The RpcError ``call`` fails with; fails the test if it succeeds."""
    error = error_of(call)
    if error is None:
        pytest.fail("the call succeeded; an error was expected")
    return error


def crash_during(driver: DriverProcess, call: Callable[[], object]) -> None:
    """``call`` must die with the driver: UNAVAILABLE for the caller, SIGKILL for the process."""
    error = rpc_error(call)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
    status = driver.wait_exit()
    assert status == -signal.SIGKILL, f"driver exit status {status}, expected SIGKILL"
