"""HTTP /healthz: healthy only when Probe says ready and, with registration on, the kubelet
accepted the driver; bounded in time whatever the check does."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from csi.config import HostPort
from csi.health import BoundedCheck, Check, HealthRule, HealthServer
from csi.host.tools import ESSENTIAL_TOOLS
from csi.pb import csi_pb2
from csi.readiness import STILL_RECONCILING, Readiness
from csi.registration import RegistrationState, State, Status
from csi.server import build
from tests.support.driver import make_config, running_driver
from tests.support.status import raises_code

LOCAL = HostPort("127.0.0.1", 0)


@pytest.fixture
def tools_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding exactly the essential host tools (stand-ins: only their presence counts)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ESSENTIAL_TOOLS:
        stand_in = bin_dir / tool
        stand_in.write_text("#!/bin/sh\nexit 0\n")
        stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def get(port: int, path: str = "/healthz", timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@contextmanager
def health_server(check: Check, timeout: float = 3.0) -> Iterator[HealthServer]:
    server = HealthServer(LOCAL, check, timeout)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ready(readiness: Readiness | None = None) -> Readiness:
    readiness = readiness or Readiness()
    readiness.mark_ready()
    return readiness


@pytest.mark.usefixtures("tools_on_path")
def test_not_reconciled_is_unhealthy(data_dir: Path) -> None:
    with health_server(HealthRule(Readiness(), data_dir, None)) as server:
        code, text = get(server.port)
    assert code == 503
    assert text.strip() == STILL_RECONCILING


@pytest.mark.usefixtures("tools_on_path")
def test_ready_without_registration_is_healthy(data_dir: Path) -> None:
    with health_server(HealthRule(ready(), data_dir, None)) as server:
        assert get(server.port) == (200, "ok\n")


@pytest.mark.usefixtures("tools_on_path")
def test_ready_but_not_registered_is_unhealthy(data_dir: Path) -> None:
    with health_server(HealthRule(ready(), data_dir, RegistrationState())) as server:
        code, text = get(server.port)
    assert code == 503
    assert "not yet registered with the kubelet" in text


@pytest.mark.usefixtures("tools_on_path")
def test_accepted_is_healthy_and_refused_says_why(data_dir: Path) -> None:
    state = RegistrationState()
    with health_server(HealthRule(ready(), data_dir, state)) as server:
        state.set(Status(State.ACCEPTED))
        assert get(server.port) == (200, "ok\n")
        state.set(Status(State.REFUSED, "a driver with a higher version"))
        code, text = get(server.port)
        assert code == 503
        assert text == "the kubelet refused the registration: a driver with a higher version\n"
        state.set(Status(State.PENDING))  # the kubelet restarted and asked again
        assert get(server.port)[0] == 503


@pytest.mark.usefixtures("tools_on_path")
def test_accepted_but_not_reconciled_is_unhealthy(data_dir: Path) -> None:
    state = RegistrationState()
    state.set(Status(State.ACCEPTED))
    with health_server(HealthRule(Readiness(), data_dir, state)) as server:
        assert get(server.port) == (503, f"{STILL_RECONCILING}\n")


@pytest.mark.usefixtures("tools_on_path")
def test_failed_start_up_is_unhealthy(data_dir: Path) -> None:
    readiness = ready()
    readiness.mark_failed("reconciliation failed: OSError: boom")
    with health_server(HealthRule(readiness, data_dir, None)) as server:
        code, text = get(server.port)
    assert code == 503
    assert text == "start-up failed: reconciliation failed: OSError: boom\n"


def test_missing_tools_are_unhealthy(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with health_server(HealthRule(ready(), data_dir, None)) as server:
        code, text = get(server.port)
    assert code == 503
    assert text.startswith("host tools missing: ")
    assert "blkid" in text


@pytest.mark.usefixtures("tools_on_path")
def test_health_and_probe_share_one_rule(tmp_path: Path) -> None:
    """The same fault fails Probe and /healthz, with the same words."""
    with running_driver(tmp_path / "data") as running:
        running.driver.readiness.mark_failed("reconciliation failed: ValueError: damaged")
        rule = HealthRule(running.driver.readiness, running.data_dir, None)
        with raises_code(grpc.StatusCode.FAILED_PRECONDITION) as refusal:
            running.client.identity.Probe(csi_pb2.ProbeRequest())
        assert rule() == refusal.details


def test_other_paths_are_not_found() -> None:
    with health_server(lambda: None) as server:
        assert get(server.port, "/metrics")[0] == 404
        assert get(server.port, "/healthz?verbose=1") == (200, "ok\n")


def test_a_slow_check_is_answered_within_the_timeout() -> None:
    release = threading.Event()
    calls: list[float] = []

    def slow() -> str | None:
        calls.append(time.monotonic())
        release.wait(30)
        return None

    try:
        with health_server(slow, timeout=0.3) as server:
            started = time.monotonic()
            results: list[tuple[int, str]] = []
            probes = [
                threading.Thread(target=lambda: results.append(get(server.port))) for _ in range(4)
            ]
            for probe in probes:
                probe.start()
            for probe in probes:
                probe.join(10)
            elapsed = time.monotonic() - started
            assert elapsed < 2.0, f"probes took {elapsed:.1f} s"
            assert [code for code, _ in results] == [503] * 4
            assert all("did not finish within 0.3 s" in text for _, text in results)
            assert len(calls) == 1, "a stuck check must not be started again per probe"
            release.set()
            deadline = time.monotonic() + 5
            while get(server.port)[0] != 200:
                assert time.monotonic() < deadline, "the check never recovered"
                time.sleep(0.05)
    finally:
        release.set()


def test_a_failing_check_is_unhealthy_not_a_crash() -> None:
    def broken() -> str | None:
        raise RuntimeError("oops")

    check = BoundedCheck(broken, timeout=2)
    assert check() == "health check failed: RuntimeError"
    with health_server(broken) as server:
        assert get(server.port) == (503, "health check failed: RuntimeError\n")


def test_a_slow_health_client_does_not_hold_up_others() -> None:
    with health_server(lambda: None) as server:
        idle = socket.create_connection(("127.0.0.1", server.port))  # sends nothing
        try:
            assert get(server.port, timeout=2) == (200, "ok\n")
        finally:
            idle.close()


@pytest.mark.usefixtures("tools_on_path")
def test_driver_serves_health_from_start_to_stop(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", health_address=LOCAL)
    driver = build(config)
    assert driver.health is not None
    driver.start()
    try:
        port = driver.health.port
        assert get(port)[0] == 503  # not reconciled yet
        driver.reconcile_then_ready()
        assert get(port) == (200, "ok\n")
    finally:
        driver.stop(grace=0)
    with pytest.raises(urllib.error.URLError, match="refused"):
        get(port, timeout=1)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_every_interface_means_ipv4_and_ipv6() -> None:
    """``:9808`` is reached on the pod's IPv4 and, where the node has it, IPv6 address."""
    server = HealthServer(HostPort("", 0), lambda: None)
    server.start()
    try:
        assert get(server.port) == (200, "ok\n")
        if ipv6_loopback():
            with urllib.request.urlopen(f"http://[::1]:{server.port}/healthz", timeout=5) as r:
                assert r.status == 200
    finally:
        server.stop()


def test_an_ipv6_host() -> None:
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    server = HealthServer(HostPort("::1", 0), lambda: None)
    server.start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{server.port}/healthz", timeout=5) as reply:
            assert reply.read() == b"ok\n"
    finally:
        server.stop()
