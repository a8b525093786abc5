"""The real driver process with registration and /healthz on, a test playing the kubelet:
it finds the -reg.sock, asks GetInfo, accepts (or refuses) the driver and probes /healthz;
a stop removes the socket and a restart (even over a killed driver's stale socket) makes it
afresh. Directory-volume start-up only: no root needed."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from csi.host.run import missing_tools
from csi.host.tools import ESSENTIAL_TOOLS
from csi.pb import pluginregistration_pb2 as pb
from csi.pb import pluginregistration_pb2_grpc as pb_grpc
from tests.support.driver import driver_subprocess, free_port
from tests.support.prerequisites import need

DRIVER = "localvol.csi.dev"
KUBELET_PATH = f"/var/lib/kubelet/plugins/{DRIVER}/csi.sock"


@pytest.fixture(autouse=True)
def _tools() -> None:
    missing = missing_tools(ESSENTIAL_TOOLS)
    need(not missing, f"Probe needs the host tools {missing}")


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@contextmanager
def kubelet(socket_path: Path) -> Iterator[pb_grpc.RegistrationStub]:
    channel = grpc.insecure_channel(f"unix://{socket_path}")
    try:
        yield pb_grpc.RegistrationStub(channel)
    finally:
        channel.close()


class Node:
    """One node's paths: the driver's data dir, the kubelet's registry, a health port."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.registry = tmp_path / "plugins_registry"
        self.port = free_port()
        self.starts = 0

    @property
    def reg_socket(self) -> Path:
        return self.registry / f"{DRIVER}-reg.sock"

    @property
    def log(self) -> Path:
        return self.tmp / f"driver-{self.starts}.log"

    @contextmanager
    def driver(self) -> Iterator[None]:
        self.starts += 1
        args = (
            f"--plugin-registration-dir={self.registry}",
            f"--kubelet-registration-path={KUBELET_PATH}",
            f"--health-address=127.0.0.1:{self.port}",
        )
        with driver_subprocess(self.data, self.log, *args):
            yield


def register(node: Node, accept: bool = True, error: str = "") -> pb.PluginInfo:
    """The kubelet's plugin watcher: GetInfo on the socket it found, then its verdict."""
    assert node.reg_socket.is_socket(), f"no registration socket: {node.log.read_text()}"
    with kubelet(node.reg_socket) as stub:
        info = stub.GetInfo(pb.InfoRequest(), timeout=5)
        status = pb.RegistrationStatus(plugin_registered=accept, error=error)
        stub.NotifyRegistrationStatus(status, timeout=5)
    return info


def wait_for(port: int, code: int) -> tuple[int, str]:
    deadline = time.monotonic() + 10
    while True:
        answer = healthz(port)
        if answer[0] == code or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def test_the_driver_registers_and_reports_health(tmp_path: Path) -> None:
    node = Node(tmp_path)
    with node.driver():
        # Ready (Probe said so before the helper yielded), but nobody registered it yet.
        code, text = healthz(node.port)
        assert (code, text) == (503, "not yet registered with the kubelet\n")
        info = register(node)
        assert info.type == "CSIPlugin"
        assert info.name == DRIVER
        assert info.endpoint == KUBELET_PATH
        assert list(info.supported_versions) == ["1.0.0"]
        assert healthz(node.port) == (200, "ok\n")
    assert not node.reg_socket.exists(), "registration socket left behind at stop"
    assert not (node.data / "csi.sock").exists()
    with pytest.raises(urllib.error.URLError):
        healthz(node.port)


def test_a_restart_registers_afresh_over_a_stale_socket(tmp_path: Path) -> None:
    node = Node(tmp_path)
    with node.driver():
        register(node)
        assert healthz(node.port)[0] == 200
    # A driver killed with SIGKILL leaves its socket file behind, bound to nobody.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(node.reg_socket))
    stale.close()
    with node.driver():
        assert healthz(node.port)[0] == 503  # the old acceptance does not carry over
        register(node)
        assert healthz(node.port) == (200, "ok\n")
    assert not node.reg_socket.exists()


def test_a_refusal_is_logged_and_unhealthy_until_accepted(tmp_path: Path) -> None:
    node = Node(tmp_path)
    reason = f'RegisterPlugin error -- CSI driver "{DRIVER}": no supported version'
    with node.driver():
        register(node, accept=False, error=reason)
        code, text = healthz(node.port)
        assert code == 503
        assert text == f"the kubelet refused the registration: {reason}\n"
        # The kubelet retries: a new GetInfo, then its acceptance.
        register(node)
        assert wait_for(node.port, 200) == (200, "ok\n")
    log = node.log.read_text()
    refusal = [line for line in log.splitlines() if "event=registration_refused" in line]
    assert refusal, log
    assert reason in refusal[0]
