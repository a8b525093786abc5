"""The driver under test: in this process (``running_driver``) or as its own process, the
way a node runs it (``DriverProcess``: start, probe, stop, kill, restart)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from csi.config import Config
from csi.faults import ENV as FAULT_ENV
from csi.pb import csi_pb2, csi_pb2_grpc
from csi.server import Driver, build
from tests.support.kubelet import Kubelet
from tests.support.status import rpc_error

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 20.0


@dataclass
class Client:
    identity: csi_pb2_grpc.IdentityStub
    controller: csi_pb2_grpc.ControllerStub
    node: csi_pb2_grpc.NodeStub
    channel: grpc.Channel


def connect(socket: Path) -> Client:
    channel = grpc.insecure_channel(f"unix://{socket}")
    return Client(
        identity=csi_pb2_grpc.IdentityStub(channel),
        controller=csi_pb2_grpc.ControllerStub(channel),
        node=csi_pb2_grpc.NodeStub(channel),
        channel=channel,
    )


# -- in this process -------------------------------------------------------------------
@dataclass
class RunningDriver:
    driver: Driver
    client: Client
    config: Config

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir


def make_config(data_dir: Path, **overrides: object) -> Config:
    values: dict[str, object] = {
        "driver_name": "localvol.csi.dev",
        "node_id": "test-node",
        "data_dir": data_dir,
        "endpoint": f"unix://{data_dir}/csi.sock",
        "shutdown_grace": 2.0,
    }
    values.update(overrides)
    return Config(**values)  # type: ignore[arg-type]


@contextmanager
def running_driver(
    data_dir: Path, *, whole: bool = False, **overrides: object
) -> Iterator[RunningDriver]:
    """Start the real gRPC server in this process on a unix socket under ``data_dir``;
    ``whole``: everything the configuration asks for too (/healthz, the Docker plugin's
    socket, registration), as the driver's own start does."""
    config = make_config(data_dir, **overrides)
    driver = build(config)
    if whole:
        driver.start()
    else:
        driver.server.start()
    driver.reconcile_then_ready()
    client = connect(data_dir / "csi.sock")
    try:
        yield RunningDriver(driver, client, config)
    finally:
        client.channel.close()
        driver.stop(grace=1.0)


# -- as its own process ----------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a driver's --health-address)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def driver_argv(
    data_dir: Path, args: Sequence[str] = (), *, node_id: str = "n1", debug: bool = True
) -> list[str]:
    """``python -m csi`` serving ``data_dir`` (a path as the driver's process sees it);
    ``debug``: at debug level with a 2 s shutdown grace, else as a user starts it."""
    argv = [sys.executable, "-m", "csi", "--data-dir", str(data_dir), "--node-id", node_id]
    if debug:
        argv += ["--log-level", "debug", "--shutdown-grace", "2"]
    return [*argv, *args]


class DriverProcess:
    """One node's driver: a data directory, a log directory and at most one live process.

    Each start is ``python -m csi`` with its own environment (an optional
    ``CSI_FAULT_POINT``, an optional PATH shim directory first on PATH) and its own log
    file (``log_file``, if given, is every start's log). Crash points kill the process with
    SIGKILL, which is why the crash tests cannot run the server in-process.
    """

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        kubelet_root: Path | None = None,
        *,
        node_id: str = "n1",
        debug: bool = True,
        log_file: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.kubelet_root = kubelet_root if kubelet_root is not None else log_dir / "kubelet"
        self.node_id = node_id
        self.debug = debug
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Client | None = None
        self.starts = 0
        log_dir.mkdir(parents=True, exist_ok=True)

    # -- life cycle ----------------------------------------------------------------
    @property
    def socket(self) -> Path:
        return self.data_dir / "csi.sock"

    @property
    def log_path(self) -> Path:
        return self.log_file or self.log_dir / f"driver-{self.starts}.log"

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
        return driver_argv(self.data_dir, args, node_id=self.node_id, debug=self.debug)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"driver exited ({self.proc.returncode}) at start:\n{self.log()}")
            if self.socket.exists():
                if self._client is None:
                    self._client = connect(self.socket)
                try:
                    reply = self.client.identity.Probe(csi_pb2.ProbeRequest(), timeout=2)
                    if reply.ready.value:
                        return
                except grpc.RpcError as exc:
                    if "start-up failed" in (exc.details() or ""):
                        pytest.fail(f"driver start-up failed: {exc.details()}\n{self.log()}")
            time.sleep(0.05)
        pytest.fail(f"driver not ready within {READY_TIMEOUT}s:\n{self.log()}")

    def _disconnect(self) -> None:
        if self._client is not None:
            self._client.channel.close()
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
        """The current (or last) start's output."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def all_logs(self) -> str:
        paths = sorted(self.log_dir.glob("driver-*.log"), key=lambda p: p.stat().st_mtime)
        return "\n".join(p.read_text(errors="replace") for p in paths)


@contextmanager
def driver_subprocess(
    data: Path,
    log: Path,
    *extra_args: str,
    node_id: str = "test-node",
    path_first: Path | None = None,
) -> Iterator[Client]:
    """``python -m csi`` at debug level on ``data`` (output in ``log``), ready before it is
    yielded and stopped after; ``path_first`` goes first on its PATH (a tool shim)."""
    driver = DriverProcess(data, log.parent, node_id=node_id, log_file=log)
    try:
        yield driver.start(path_prefix=path_first, args=extra_args)
    finally:
        try:
            driver.stop()
        finally:
            driver.kill()


def crash_during(driver: DriverProcess, call: Callable[[], object]) -> None:
    """``call`` must die with the driver: UNAVAILABLE for the caller, SIGKILL for the process."""
    error = rpc_error(call)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
    status = driver.wait_exit()
    assert status == -signal.SIGKILL, f"driver exit status {status}, expected SIGKILL"
