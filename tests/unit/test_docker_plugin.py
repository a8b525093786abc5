"""The Docker volume-plugin protocol over a real unix socket, without root: every call, good
and bad input, the error shapes, the time budget, and what CSI sees of a plugin volume."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from csi.docker_plugin import CONTENT_TYPE, DockerPlugin
from csi.pb import csi_pb2
from csi.server import Driver, build
from tests.legacy_condition import legacy_condition
from tests.support.driver import make_config

DIRECTORY = {"volumeType": "directory", "size": "10Mi"}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(self._path))


class Plugin:
    def __init__(self, path: Path) -> None:
        self.path = path

    def raw(self, method: str, call: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = _UnixConnection(self.path)
        try:
            conn.request(method, call, body, {"Content-Type": CONTENT_TYPE})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def call(self, call: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        status, headers, data = self.raw("POST", call, json.dumps(body or {}).encode())
        assert int(headers["Content-Length"]) == len(data)
        return status, json.loads(data)


def _start(data: Path) -> Driver:
    config = make_config(data, docker_plugin_socket=data.parent / "plugin.sock")
    driver = build(config)
    driver.start()
    driver.reconcile_then_ready()
    return driver


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[Plugin]:
    driver = _start(tmp_path / "data")
    try:
        yield Plugin(tmp_path / "plugin.sock")
    finally:
        driver.stop(grace=1.0)
    assert not (tmp_path / "plugin.sock").exists()  # removed at shutdown


def test_activate_and_capabilities(plugin: Plugin) -> None:
    assert plugin.call("/Plugin.Activate") == (200, {"Implements": ["VolumeDriver"]})
    assert plugin.call("/VolumeDriver.Capabilities") == (200, {"Capabilities": {"Scope": "local"}})


def test_socket_is_root_only(plugin: Plugin) -> None:
    assert plugin.path.stat().st_mode & 0o077 == 0


def test_create_get_list_path_remove(plugin: Plugin, tmp_path: Path) -> None:
    assert plugin.call("/VolumeDriver.Create", {"Name": "web-data", "Opts": DIRECTORY}) == (
        200,
        {"Err": ""},
    )
    # Idempotent: a retried Create adopts the volume.
    assert plugin.call("/VolumeDriver.Create", {"Name": "web-data", "Opts": DIRECTORY})[0] == 200
    status, reply = plugin.call("/VolumeDriver.Get", {"Name": "web-data"})
    assert status == 200
    volume = reply["Volume"]
    assert volume["Name"] == "web-data"
    assert volume["Mountpoint"] == ""
    assert volume["Status"]["volumeType"] == "directory"
    assert volume["Status"]["sizeBytes"] == 10 * 2**20
    assert volume["Status"]["abnormal"] is False
    status, reply = plugin.call("/VolumeDriver.List")
    assert status == 200
    assert [v["Name"] for v in reply["Volumes"]] == ["web-data"]
    assert plugin.call("/VolumeDriver.Path", {"Name": "web-data"}) == (
        200,
        {"Mountpoint": "", "Err": ""},
    )
    assert plugin.call("/VolumeDriver.Remove", {"Name": "web-data"}) == (200, {"Err": ""})
    assert plugin.call("/VolumeDriver.Remove", {"Name": "web-data"}) == (200, {"Err": ""})
    status, reply = plugin.call("/VolumeDriver.Get", {"Name": "web-data"})
    assert status == 404
    assert reply == {"Err": "no such volume: web-data"}
    assert plugin.call("/VolumeDriver.List") == (200, {"Volumes": [], "Err": ""})
    assert list((tmp_path / "data" / "volumes").iterdir()) == []
    assert list((tmp_path / "data" / "state" / "docker").iterdir()) == []


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"Opts": DIRECTORY}, 400, "Name is required"),
        ({"Name": "../x", "Opts": DIRECTORY}, 400, "Name must be"),
        ({"Name": "a/b", "Opts": DIRECTORY}, 400, "Name must be"),
        ({"Name": "x" * 121, "Opts": DIRECTORY}, 400, "Name must be"),
        ({"Name": "v", "Opts": {"volumeType": "directory", "sise": "1Gi"}}, 400, "sise"),
        ({"Name": "v", "Opts": {"volumeType": "directory", "size": "10GB"}}, 400, "not a size"),
        ({"Name": "v", "Opts": {"volumeType": "directory", "size": "0"}}, 400, "above zero"),
        ({"Name": "v", "Opts": {"volumeType": "tape"}}, 400, "volumeType"),
        ({"Name": "v", "Opts": {"volumeType": "directory", "size": 5}}, 400, "strings"),
        ({"Name": "v", "Opts": ["size"]}, 400, "strings"),
        (
            {"Name": "v", "Opts": {"volumeType": "directory", "encryptionKey": "k" * 20}},
            400,
            "fscrypt",
        ),
        ({"Name": "v", "Opts": {"encryption": "fscrypt"}}, 400, "exactly one"),
        ({"Name": "v", "Opts": {"encryption": "fscrypt", "encryptionKey": "short"}}, 400, "16"),
        (
            {"Name": "v", "Opts": {"encryption": "fscrypt", "encryptionKeyFile": "rel/key"}},
            400,
            "absolute",
        ),
        (
            {"Name": "v", "Opts": {"encryption": "fscrypt", "encryptionKeyFile": "/nonexistent/k"}},
            409,
            "cannot be opened",
        ),
        ({"Name": "v", "Opts": {"volumeType": "directory", "size": "1Ei"}}, 400, ""),
    ],
)
def test_create_refuses_bad_input_and_changes_nothing(
    plugin: Plugin, tmp_path: Path, body: dict[str, Any], status: int, words: str
) -> None:
    got, reply = plugin.call("/VolumeDriver.Create", body)
    assert got == status, reply
    assert set(reply) == {"Err"}
    assert words in reply["Err"]
    data = tmp_path / "data"
    assert list((data / "state" / "volumes").iterdir()) == []
    assert list((data / "state" / "docker").iterdir()) == []
    assert plugin.call("/VolumeDriver.List") == (200, {"Volumes": [], "Err": ""})


def test_create_with_an_empty_key_file(plugin: Plugin, tmp_path: Path) -> None:
    empty = tmp_path / "empty-key"
    empty.write_text("\n")
    opts = {"encryption": "fscrypt", "encryptionKeyFile": str(empty)}
    got, reply = plugin.call("/VolumeDriver.Create", {"Name": "v", "Opts": opts})
    assert (got, reply) == (400, {"Err": "encryptionKeyFile is empty"})


def test_create_with_other_options_is_a_conflict(plugin: Plugin) -> None:
    assert plugin.call("/VolumeDriver.Create", {"Name": "v", "Opts": DIRECTORY})[0] == 200
    status, reply = plugin.call(
        "/VolumeDriver.Create", {"Name": "v", "Opts": {**DIRECTORY, "mode": "0700"}}
    )
    assert status == 409
    assert "different parameters" in reply["Err"]


def test_size_limits_apply(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "data",
        docker_plugin_socket=tmp_path / "plugin.sock",
        max_volumes_per_node=1,
    )
    driver = build(config)
    driver.start()
    driver.reconcile_then_ready()
    try:
        plugin = Plugin(tmp_path / "plugin.sock")
        assert plugin.call("/VolumeDriver.Create", {"Name": "a", "Opts": DIRECTORY})[0] == 200
        status, reply = plugin.call("/VolumeDriver.Create", {"Name": "b", "Opts": DIRECTORY})
        assert status == 507
        assert "maximum of 1 volumes" in reply["Err"]
        status, reply = plugin.call(
            "/VolumeDriver.Create", {"Name": "a", "Opts": {**DIRECTORY, "size": "20Ei"}}
        )
        assert status == 400
    finally:
        driver.stop(grace=1.0)


@pytest.mark.parametrize("call", ["Mount", "Unmount", "Path", "Get", "Remove"])
def test_calls_on_a_bad_name(plugin: Plugin, call: str) -> None:
    status, reply = plugin.call(f"/VolumeDriver.{call}", {"Name": "../../etc", "ID": "x"})
    assert status == 400
    assert set(reply) == {"Err"}


def test_mount_errors(plugin: Plugin) -> None:
    assert plugin.call("/VolumeDriver.Mount", {"Name": "nope", "ID": "a"})[0] == 404
    assert plugin.call("/VolumeDriver.Path", {"Name": "nope"})[0] == 404
    assert plugin.call("/VolumeDriver.Create", {"Name": "v", "Opts": DIRECTORY})[0] == 200
    for bad in ("", 5, None, "x" * 300, "a\x00b"):
        status, reply = plugin.call("/VolumeDriver.Mount", {"Name": "v", "ID": bad})
        assert status == 400, bad
        assert "ID" in reply["Err"]
    # An ID never mounted: nothing to undo, success.
    assert plugin.call("/VolumeDriver.Unmount", {"Name": "v", "ID": "never"}) == (200, {"Err": ""})


def test_http_errors(plugin: Plugin) -> None:
    status, _, data = plugin.raw("POST", "/VolumeDriver.Create", b"{not json")
    assert (status, json.loads(data)) == (400, {"Err": "request body is not JSON"})
    status, _, data = plugin.raw("POST", "/VolumeDriver.Create", b"[1]")
    assert status == 400
    status, _, data = plugin.raw("POST", "/VolumeDriver.Explode", b"{}")
    assert status == 404
    assert json.loads(data)["Err"].startswith("no such call")
    status, _, data = plugin.raw("GET", "/VolumeDriver.List", b"")
    assert status == 405
    status, _, data = plugin.raw("POST", "/VolumeDriver.Create", b" " * (65 * 1024))
    assert status == 413
    # An empty body is an empty object.
    status, _, data = plugin.raw("POST", "/VolumeDriver.List", b"")
    assert status == 200


def test_reply_arrives_whole_in_one_write(plugin: Plugin) -> None:
    """A client that reads once and closes (Podman reads the status, then stops) gets the
    status line, the headers and the body in that one read."""
    body = b'{"Name": "nope"}'
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(plugin.path))
    request = (
        b"POST /VolumeDriver.Get HTTP/1.1\r\nHost: plugin\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    sock.sendall(request)
    time.sleep(0.3)  # let the reply land in the socket buffer
    data = sock.recv(65536)
    sock.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 ")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.startswith(b"Content-Length")
    )
    assert len(payload) == length
    assert json.loads(payload) == {"Err": "no such volume: nope"}


def test_a_slow_call_answers_within_the_budget(plugin: Plugin, tmp_path: Path) -> None:
    """A call still running after the budget is answered (503, retry) and goes on."""
    release = threading.Event()
    docker = _docker_of(plugin)
    named = docker.named
    real_create = named.create

    def slow_create(name: str, opts: object) -> None:
        release.wait(10)
        real_create(name, opts)

    named.create = slow_create  # type: ignore[method-assign]
    started = time.monotonic()
    status, reply = plugin.call("/VolumeDriver.Create", {"Name": "slow", "Opts": DIRECTORY})
    took = time.monotonic() - started
    assert status == 503
    assert "retry" in reply["Err"]
    assert took < 5.0
    release.set()
    named.create = real_create  # type: ignore[method-assign]
    deadline = time.monotonic() + 5
    while plugin.call("/VolumeDriver.Get", {"Name": "slow"})[0] != 200:
        assert time.monotonic() < deadline, "the background Create never finished"
        time.sleep(0.05)
    assert plugin.call("/VolumeDriver.Create", {"Name": "slow", "Opts": DIRECTORY})[0] == 200


_RUNNING: dict[Path, DockerPlugin] = {}


def _docker_of(plugin: Plugin) -> DockerPlugin:
    return _RUNNING[plugin.path]


@pytest.fixture(autouse=True)
def _track(monkeypatch: pytest.MonkeyPatch) -> None:
    real_start = DockerPlugin.start

    def start(self: DockerPlugin) -> None:
        real_start(self)
        _RUNNING[self.socket_path] = self

    monkeypatch.setattr(DockerPlugin, "start", start)


def test_calls_wait_for_reconciliation(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", docker_plugin_socket=tmp_path / "plugin.sock")
    driver = build(config)
    driver.start()
    try:
        plugin = Plugin(tmp_path / "plugin.sock")
        assert plugin.call("/Plugin.Activate")[0] == 200  # answered before it is ready
        status, reply = plugin.call("/VolumeDriver.List")
        assert status == 503
        assert "reconciling" in reply["Err"]
        driver.reconcile_then_ready()
        assert plugin.call("/VolumeDriver.List")[0] == 200
    finally:
        driver.stop(grace=1.0)


def test_plugin_volume_is_a_csi_volume_and_survives_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    driver = _start(data)
    try:
        plugin = Plugin(tmp_path / "plugin.sock")
        assert (
            plugin.call("/VolumeDriver.Create", {"Name": "web-data", "Opts": DIRECTORY})[0] == 200
        )
        volume_id = plugin.call("/VolumeDriver.Get", {"Name": "web-data"})[1]["Volume"]["Status"][
            "volumeId"
        ]
    finally:
        driver.stop(grace=1.0)
    driver = _start(data)
    try:
        record = driver.volumes.store.get(volume_id)
        assert record is not None
        assert record.name == "docker/web-data"
        assert record.capacity_bytes == 10 * 2**20
        import grpc

        from csi.pb import csi_pb2_grpc

        with grpc.insecure_channel(driver.config.endpoint) as channel:
            controller = csi_pb2_grpc.ControllerStub(channel)
            listed = controller.ListVolumes(csi_pb2.ListVolumesRequest())
            entries = {e.volume.volume_id: e for e in listed.entries}
            assert entries[volume_id].volume.capacity_bytes == 10 * 2**20
            condition = legacy_condition(entries[volume_id].status)
            assert condition is not None
            assert condition.abnormal is False
        plugin = Plugin(tmp_path / "plugin.sock")
        status, reply = plugin.call("/VolumeDriver.Get", {"Name": "web-data"})
        assert status == 200
        assert reply["Volume"]["Status"]["volumeId"] == volume_id
        assert plugin.call("/VolumeDriver.Remove", {"Name": "web-data"})[0] == 200
        assert driver.volumes.store.get(volume_id) is None
    finally:
        driver.stop(grace=1.0)
