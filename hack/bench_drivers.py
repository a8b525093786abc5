"""The CSI drivers hack/bench measures: ours, started in a fresh data directory, and a peer
started from a command line (or any endpoint already listening); each stopped by its PID."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from csi.pb import csi_pb2, csi_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent


class Driver:
    """One CSI endpoint: a process this run started (``argv``) or one already listening
    (``endpoint``, with ``pid`` if its system calls are to be counted)."""

    def __init__(
        self,
        name: str,
        params: dict[str, dict[str, str]],
        *,
        endpoint: str,
        argv: list[str] | None = None,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        pid: int | None = None,
    ) -> None:
        self.name = name
        self.params = params
        self.endpoint = endpoint
        self.argv = argv
        self.env = env
        self.log = log
        self.pid = pid
        self.proc: subprocess.Popen[bytes] | None = None
        if argv is not None:
            self.start()
        else:
            self.connect()

    @property
    def own(self) -> bool:
        return self.argv is not None

    def start(self) -> float:
        """Start the process; returns seconds from exec to Probe ready."""
        assert self.argv is not None
        socket_path = Path(self.endpoint.removeprefix("unix://"))
        socket_path.unlink(missing_ok=True)
        started = time.perf_counter()
        out = open(self.log, "ab") if self.log else None  # noqa: SIM115 (the child keeps it)
        try:
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=out, start_new_session=True
            )
        finally:
            if out:
                out.close()
        self.pid = self.proc.pid
        deadline = time.monotonic() + 120
        while not socket_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"{self.name} exited with {self.proc.returncode} (log: {self.log})"
                )
            time.sleep(0.002)
        self.connect()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                reply = self.identity.Probe(csi_pb2.ProbeRequest(), timeout=5)
                # CSI: a Probe reply without "ready" means ready.
                if not reply.HasField("ready") or reply.ready.value:
                    return time.perf_counter() - started
            except grpc.RpcError:
                pass
            time.sleep(0.002)
        raise SystemExit(f"{self.name} not ready after 120 s (log: {self.log})")

    def stop(self) -> None:
        """Stop a process this run started, by its PID."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def connect(self) -> None:
        channel = grpc.insecure_channel(self.endpoint)
        self.identity = csi_pb2_grpc.IdentityStub(channel)
        self.controller = csi_pb2_grpc.ControllerStub(channel)
        self.node = csi_pb2_grpc.NodeStub(channel)

    def rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def our_driver(data: Path, params: dict[str, dict[str, str]]) -> Driver:
    argv = [sys.executable, "-m", "csi", "--data-dir", str(data), "--node-id", "bench"]
    return Driver(
        "ours",
        params,
        endpoint=f"unix://{data}/csi.sock",
        argv=[*argv, "--log-level", "warning"],
    )


def path_without(hidden: list[str], shims: Path) -> str:
    """A PATH of one directory linking every program of the usual PATH but ``hidden``: a
    peer runs as its container would, where (for example) no systemd-run exists."""
    shims.mkdir(parents=True, exist_ok=True)
    for directory in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            link = shims / entry.name
            if entry.name in hidden or link.exists() or not os.access(entry.path, os.X_OK):
                continue
            link.symlink_to(entry.path)
    return str(shims)


def started_peer(
    name: str, params: dict[str, dict[str, str]], command: str, hidden: list[str], base: Path
) -> Driver:
    """Start a peer from ``command``, its ``{endpoint}`` and ``{state}`` filled in with a
    socket and an empty directory under ``base``; its PATH lacks the ``hidden`` programs."""
    socket_path = base / "csi.sock"
    state = base / "state"
    state.mkdir(parents=True)
    fields = {"endpoint": f"unix://{socket_path}", "state": str(state)}
    argv = [word.format(**fields) for word in shlex.split(command)]
    env = dict(os.environ, PATH=path_without(hidden, base / "bin"))
    return Driver(
        name, params, endpoint=fields["endpoint"], argv=argv, env=env, log=base / "driver.log"
    )
