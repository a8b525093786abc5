"""Shared test helpers: prerequisites that fail under CI, and an in-process driver."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from csi.config import Config
from csi.pb import csi_pb2, csi_pb2_grpc
from csi.server import Driver, build

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing; under CI=true a missing prerequisite fails."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing under CI: {reason}")
    pytest.skip(reason)


def need_root() -> None:
    need(os.geteuid() == 0, "needs root (loop devices and mounts)")
    need(Path("/dev/loop-control").exists(), "needs /dev/loop-control")


def need_tool(tool: str) -> None:
    need(shutil.which(tool) is not None, f"needs {tool} on PATH")


@dataclass
class Client:
    identity: csi_pb2_grpc.IdentityStub
    controller: csi_pb2_grpc.ControllerStub
    node: csi_pb2_grpc.NodeStub
    channel: grpc.Channel


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
def running_driver(data_dir: Path, **overrides: object) -> Iterator[RunningDriver]:
    """Start the real gRPC server in this process on a unix socket under ``data_dir``."""
    config = make_config(data_dir, **overrides)
    driver = build(config)
    driver.server.start()
    driver.reconcile_then_ready()
    channel = grpc.insecure_channel(config.endpoint)
    client = Client(
        identity=csi_pb2_grpc.IdentityStub(channel),
        controller=csi_pb2_grpc.ControllerStub(channel),
        node=csi_pb2_grpc.NodeStub(channel),
        channel=channel,
    )
    try:
        yield RunningDriver(driver, client, config)
    finally:
        channel.close()
        driver.stop(grace=1.0)


def mount_capability(
    fs_type: str = "",
    mode: int = csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER,
    flags: tuple[str, ...] = (),
) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(flags)),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode),
    )


def block_capability(
    mode: int = csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER,
) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        block=csi_pb2.VolumeCapability.BlockVolume(),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode),
    )


def status_of(call: object) -> grpc.StatusCode:
    """Run a zero-argument callable and return the gRPC status it ended with."""
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


REPO = Path(__file__).resolve().parents[1]


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
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env['PATH']}"
    env.pop("CSI_FAULT_POINT", None)
    argv = [sys.executable, "-m", "csi", "--data-dir", str(data), "--node-id", node_id]
    argv += ["--log-level", "debug", "--shutdown-grace", "2", *extra_args]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    channel = grpc.insecure_channel(f"unix://{data / 'csi.sock'}")
    identity = csi_pb2_grpc.IdentityStub(channel)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"driver exited: {log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, "driver not ready in 20 s"
            try:
                if identity.Probe(csi_pb2.ProbeRequest(), timeout=2).ready.value:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        yield Client(
            identity=identity,
            controller=csi_pb2_grpc.ControllerStub(channel),
            node=csi_pb2_grpc.NodeStub(channel),
            channel=channel,
        )
    finally:
        channel.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
