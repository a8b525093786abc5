"""Kubelet plugin registration: GetInfo, the kubelet's verdict, and the socket's life."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from csi.config import Config
from csi.pb import csi_pb2, csi_pb2_grpc
from csi.pb import pluginregistration_pb2 as pb
from csi.pb import pluginregistration_pb2_grpc as pb_grpc
from csi.registration import Registration, State
from csi.server import Driver, build
from tests.support.driver import make_config

KUBELET_PATH = Path("/var/lib/kubelet/plugins/localvol.csi.dev/csi.sock")


@pytest.fixture
def registry() -> Iterator[Path]:
    # A short path: a unix socket's path must fit in 107 bytes, and pytest's tmp_path
    # (with a long test name and a high run number) can pass that.
    root = Path(tempfile.mkdtemp(prefix="reg-"))
    try:
        yield root / "plugins_registry"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def serving(registry: Path, name: str = "localvol.csi.dev") -> Iterator[Registration]:
    registration = Registration(registry / f"{name}-reg.sock", name, KUBELET_PATH, [])
    registration.start()
    try:
        yield registration
    finally:
        registration.stop(grace=0)


@contextmanager
def kubelet(socket_path: Path) -> Iterator[pb_grpc.RegistrationStub]:
    """What the kubelet's plugin watcher does: dial the socket it found in the registry."""
    channel = grpc.insecure_channel(f"unix://{socket_path}")
    try:
        yield pb_grpc.RegistrationStub(channel)
    finally:
        channel.close()


def notify(stub: pb_grpc.RegistrationStub, registered: bool, error: str = "") -> None:
    status = pb.RegistrationStatus(plugin_registered=registered, error=error)
    stub.NotifyRegistrationStatus(status, timeout=5)


def leave_stale_socket(path: Path) -> None:
    """What a killed driver leaves behind: a bound socket file nobody listens on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


def test_get_info_answers_what_the_kubelet_checks(registry: Path) -> None:
    with serving(registry) as registration, kubelet(registration.socket_path) as stub:
        info = stub.GetInfo(pb.InfoRequest(), timeout=5)
    assert info.type == "CSIPlugin"
    assert info.name == "localvol.csi.dev"
    assert info.endpoint == str(KUBELET_PATH)
    # The kubelet's CSI handler takes the highest version with major 1 (x.y[.z]) and
    # refuses an empty list or one without a 1.x.
    assert info.supported_versions
    majors = {int(v.split(".")[0]) for v in info.supported_versions}
    assert all(re.fullmatch(r"[1-9]\d*(\.\d+)+", v) for v in info.supported_versions)
    assert 1 in majors


def test_socket_named_for_the_driver(registry: Path) -> None:
    with serving(registry, "other.example.com") as registration:
        assert registration.socket_path == registry / "other.example.com-reg.sock"
        assert registration.socket_path.is_socket()


def test_status_is_pending_until_the_kubelet_says(registry: Path) -> None:
    with serving(registry) as registration, kubelet(registration.socket_path) as stub:
        assert registration.state.status.state is State.PENDING
        stub.GetInfo(pb.InfoRequest(), timeout=5)
        assert registration.state.status.state is State.PENDING
        assert registration.state.status.problem == "not yet registered with the kubelet"


def test_accepted(registry: Path) -> None:
    with serving(registry) as registration, kubelet(registration.socket_path) as stub:
        stub.GetInfo(pb.InfoRequest(), timeout=5)
        notify(stub, True)
        status = registration.state.status
    assert status.state is State.ACCEPTED
    assert status.problem is None


def test_refusal_is_kept_and_logged_with_its_reason(
    registry: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reason = 'RegisterPlugin error -- plugin "localvol.csi.dev" has no 1.x version'
    caplog.set_level(logging.INFO, logger="csi.registration")
    with serving(registry) as registration, kubelet(registration.socket_path) as stub:
        stub.GetInfo(pb.InfoRequest(), timeout=5)
        notify(stub, False, reason)
        status = registration.state.status
    assert status.state is State.REFUSED
    assert status.reason == reason
    assert status.problem is not None
    assert reason in status.problem
    refusals = [r for r in caplog.records if "registration_refused" in r.getMessage()]
    assert refusals, caplog.text
    assert refusals[0].levelno >= logging.WARNING
    assert reason in refusals[0].getMessage()


def test_a_new_get_info_sets_the_verdict_back_to_pending(registry: Path) -> None:
    """A restarted kubelet asks again: until it answers, the old acceptance does not hold."""
    with serving(registry) as registration, kubelet(registration.socket_path) as stub:
        stub.GetInfo(pb.InfoRequest(), timeout=5)
        notify(stub, True)
        assert registration.state.status.state is State.ACCEPTED
        stub.GetInfo(pb.InfoRequest(), timeout=5)
        assert registration.state.status.state is State.PENDING
        notify(stub, False, "kubelet said no")
        assert registration.state.status.state is State.REFUSED
        stub.GetInfo(pb.InfoRequest(), timeout=5)
        assert registration.state.status.state is State.PENDING
        notify(stub, True)
        assert registration.state.status.state is State.ACCEPTED


def test_stale_socket_is_replaced(registry: Path) -> None:
    path = registry / "localvol.csi.dev-reg.sock"
    leave_stale_socket(path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError):
        probe.connect(str(path))
    probe.close()
    with serving(registry) as registration, kubelet(path) as stub:
        assert stub.GetInfo(pb.InfoRequest(), timeout=5).name == "localvol.csi.dev"
        assert registration.socket_path == path


def test_a_file_that_is_not_a_socket_is_never_removed(registry: Path) -> None:
    path = registry / "localvol.csi.dev-reg.sock"
    registry.mkdir()
    path.write_text("not mine")
    registration = Registration(path, "localvol.csi.dev", KUBELET_PATH, [])
    with pytest.raises(ValueError, match="not a socket"):
        registration.start()
    assert path.read_text() == "not mine"


def test_stop_removes_the_socket_and_a_restart_binds_afresh(registry: Path) -> None:
    with serving(registry) as first:
        path = first.socket_path
        assert path.is_socket()
    assert not path.exists()
    with serving(registry) as second, kubelet(path) as stub:
        assert second.socket_path.is_socket()
        assert stub.GetInfo(pb.InfoRequest(), timeout=5).type == "CSIPlugin"
    assert not path.exists()


# -- wired into the driver ---------------------------------------------------------------
def registration_config(tmp_path: Path, **overrides: object) -> Config:
    return make_config(
        tmp_path / "data",
        plugin_registration_dir=tmp_path / "plugins_registry",
        kubelet_registration_path=KUBELET_PATH,
        **overrides,
    )


def csi_serves(config: Config) -> bool:
    channel = grpc.insecure_channel(config.endpoint)
    try:
        stub = csi_pb2_grpc.IdentityStub(channel)
        stub.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=2)
        return True
    except grpc.RpcError:
        return False
    finally:
        channel.close()


def test_no_registration_socket_before_the_csi_socket_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = registration_config(tmp_path)
    driver: Driver = build(config)
    assert config.registration_socket is not None
    assert not config.registration_socket.exists(), "bound by build(), before serving"
    registration = driver.registration
    assert registration is not None
    seen: list[bool] = []
    original = registration.start

    def start() -> None:
        seen.append(csi_serves(config))
        original()

    monkeypatch.setattr(registration, "start", start)
    driver.start()
    try:
        assert seen == [True], "registration started before the CSI socket served"
        assert config.registration_socket.is_socket()
    finally:
        driver.stop(grace=0)
    assert not config.registration_socket.exists()
    assert not Path(config.endpoint.removeprefix("unix://")).exists()


def test_registration_is_answered_while_the_driver_reconciles(tmp_path: Path) -> None:
    """The kubelet's GetInfo needs no reconciliation; Controller and Node calls wait for it."""
    config = registration_config(tmp_path)
    driver = build(config)
    driver.start()
    try:
        assert config.registration_socket is not None
        with kubelet(config.registration_socket) as stub:
            info = stub.GetInfo(pb.InfoRequest(), timeout=3)
        assert info.name == config.driver_name
        assert not driver.readiness.ready
    finally:
        driver.stop(grace=0)


def test_a_failed_registration_start_stops_the_csi_socket(tmp_path: Path) -> None:
    config = registration_config(tmp_path)
    assert config.registration_socket is not None
    config.registration_socket.parent.mkdir(parents=True)
    config.registration_socket.write_text("in the way")
    driver = build(config)
    with pytest.raises(ValueError, match="not a socket"):
        driver.start()
    assert not csi_serves(config)
    assert not os.path.exists(config.endpoint.removeprefix("unix://"))


def test_registration_off_by_default(tmp_path: Path) -> None:
    driver = build(make_config(tmp_path / "data"))
    assert driver.registration is None
    assert driver.health is None
