"""Every listener holds against many, slow and malformed clients: hundreds of idle and
byte-at-a-time connections on the health and metrics port and on the CSI and Docker
sockets, oversized, mis-chunked and malformed bodies; meanwhile a CSI call and a scrape
succeed, the driver's descriptors stay bounded, and no client mistake writes a traceback."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from csi.pb import csi_pb2
from tests.support.docker_plugin import plugin_request
from tests.support.driver import DriverProcess, free_port
from tests.support.kubelet import DIRECTORY

IDLE = 200  # connections that send nothing
TRICKLING = 40  # connections that send a byte now and then, never finishing a request


@dataclass(frozen=True)
class Served:
    """A driver with all its listeners: the CSI socket, health and metrics, the Docker plugin."""

    driver: DriverProcess
    health_port: int
    plugin: Path


@pytest.fixture
def served(driver_process: DriverProcess, tmp_path: Path) -> Served:
    port, plugin = free_port(), tmp_path / "plugin.sock"
    driver_process.start(
        args=["--health-address", f"127.0.0.1:{port}", "--docker-plugin-socket", str(plugin)]
    )
    return Served(driver_process, port, plugin)


def descriptors(driver: DriverProcess) -> int:
    assert driver.proc is not None
    return len(os.listdir(f"/proc/{driver.proc.pid}/fd"))


def connect_tcp(port: int) -> socket.socket | None:
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    return s


def connect_unix(path: Path) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(str(path))
    except OSError:
        s.close()
        return None
    return s


class Crowd:
    """Idle and trickling clients, held until ``close``."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, s: socket.socket | None) -> None:
        if s is not None:
            self.sockets.append(s)

    def trickle(self, sockets: list[socket.socket]) -> None:
        def run() -> None:
            request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4096
            for i in range(len(request)):
                if self._stop.wait(0.3):
                    return
                for s in sockets:
                    try:
                        s.send(request[i : i + 1])
                    except OSError:
                        continue

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for s in self.sockets:
            s.close()


def scrape(port: int, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                if data.startswith(b"HTTP/1.1 200"):
                    return data
        except OSError:
            pass
        assert time.monotonic() < deadline, "no scrape answered"
        time.sleep(0.2)


def csi_round_trip(driver: DriverProcess) -> None:
    request = csi_pb2.CreateVolumeRequest(
        name="under-load",
        parameters=dict(DIRECTORY.params),
        capacity_range=csi_pb2.CapacityRange(required_bytes=DIRECTORY.size),
        volume_capabilities=[DIRECTORY.cap()],
    )
    volume = driver.client.controller.CreateVolume(request, timeout=20).volume
    driver.client.controller.DeleteVolume(
        csi_pb2.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=20
    )


def test_many_idle_and_slow_clients_on_every_listener(served: Served) -> None:
    driver, port, plugin = served.driver, served.health_port, served.plugin
    before = descriptors(driver)
    crowd = Crowd()
    try:
        for _ in range(IDLE):
            crowd.add(connect_tcp(port))
            crowd.add(connect_unix(plugin))
            crowd.add(connect_unix(driver.socket))
        slow = [s for s in (connect_tcp(port) for _ in range(TRICKLING)) if s is not None]
        crowd.sockets += slow
        crowd.trickle(slow)
        time.sleep(1)
        held = descriptors(driver)
        # Each listener holds at most its connection limit (64), whatever the crowd.
        assert held - before <= 3 * 64 + 16, f"{held - before} descriptors for the crowd"
        csi_round_trip(driver)
        assert b"localvol_" in scrape(port)
        status, _ = plugin_request(plugin, "/Plugin.Activate", {}, timeout=60)
        assert status == 200
    finally:
        crowd.close()
    assert driver.proc is not None
    assert driver.proc.poll() is None
    assert "Traceback" not in driver.log()
    assert driver.stop() == 0


def raw_docker(plugin: Path, request: bytes, timeout: float = 15) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(plugin))
        s.sendall(request)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except TimeoutError:
            pass
        except ConnectionResetError:
            # Refused before the whole request was read: the reply may be lost with it.
            return data or b"HTTP/1.1 RESET"
        return data


def post(call: str, body: bytes, headers: str = "") -> bytes:
    head = f"POST {call} HTTP/1.1\r\nHost: plugin\r\n{headers}"
    if "Transfer-Encoding" not in headers and "Content-Length" not in headers:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (post("/VolumeDriver.Create", b"{}", "Content-Length: 268435456\r\n"), b"413"),
        (
            post(
                "/VolumeDriver.Create", b"-1\r\nxx\r\n0\r\n\r\n", "Transfer-Encoding: chunked\r\n"
            ),
            b"400",
        ),
        (
            post(
                "/VolumeDriver.Create",
                b"ffffff\r\n" + b"x" * 70000,
                "Transfer-Encoding: chunked\r\n",
            ),
            b"413",
        ),
        (post("/VolumeDriver.Create", b"[" * 30000 + b"]" * 30000), b"400"),
        (post("/VolumeDriver.Create", b'{"Name": "\xff\xfe"}'), b"400"),
        (post("/VolumeDriver.Create", b"[1, 2]"), b"400"),
        (b"BREW /VolumeDriver.Create HTCPCP/1.0\r\n\r\n", b"40"),
        (
            b"POST /VolumeDriver.Create HTTP/1.1\r\nHost: x\r\n"
            + b"X: "
            + b"a" * 20000
            + b"\r\n\r\n",
            b"431",
        ),
    ],
    ids=[
        "huge-length",
        "negative-chunk",
        "huge-chunk",
        "deep-nesting",
        "not-utf8",
        "not-object",
        "not-http",
        "huge-header",
    ],
)
def test_malformed_requests_get_4xx_and_change_nothing(
    served: Served, request_bytes: bytes, status: bytes
) -> None:
    reply = raw_docker(served.plugin, request_bytes)
    code = reply.split(b" ", 2)[1]
    # A request past a size limit may be cut while it is still being sent, and its reply
    # lost with the connection: for those (413, 431) a reset is the refusal too.
    refused_while_sending = status in (b"413", b"431") and code == b"RESET"
    assert code.startswith(status) or refused_while_sending, reply[:200]
    assert_unchanged_and_serving(served)


def test_a_body_shorter_than_its_length_is_dropped_after_the_idle_time(served: Served) -> None:
    started = time.monotonic()
    request = post("/VolumeDriver.Create", b'{"Na', "Content-Length: 100\r\n")
    short = raw_docker(served.plugin, request, 30)
    assert short == b"" or b" 400 " in short[:20]
    assert time.monotonic() - started < 25
    assert_unchanged_and_serving(served)


def assert_unchanged_and_serving(served: Served) -> None:
    """The plugin still answers, no volume was made, no traceback logged, a clean stop."""
    driver, plugin = served.driver, served.plugin
    assert plugin_request(plugin, "/VolumeDriver.List", {})[0] == 200
    assert list((driver.data_dir / "volumes").iterdir()) == []
    assert "Traceback" not in driver.log()
    assert driver.stop() == 0
