"""Docker and Podman never retry a plugin call: calls on one volume wait their turn and all
succeed, and a Mount that finishes after its caller stopped waiting is undone, so no mount is
left that nothing would ever unmount."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from csi.docker_plugin import BUDGET
from tests.support.docker_plugin import plugin_request
from tests.support.driver import RunningDriver, running_driver
from tests.support.host import loops_under, mounts_under

CONTAINERS = 6
EXT4 = {"size": "32Mi", "fsType": "ext4"}


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[RunningDriver]:
    with running_driver(
        tmp_path / "data", whole=True, docker_plugin_socket=tmp_path / "plugin.sock"
    ) as d:
        yield d


def call(
    driver: RunningDriver, what: str, body: dict[str, object]
) -> tuple[int, dict[str, object]]:
    socket = driver.config.docker_plugin_socket
    assert socket is not None
    return plugin_request(socket, f"/VolumeDriver.{what}", body, timeout=30)


def mounted(driver: RunningDriver) -> list[str]:
    return mounts_under(driver.data_dir)


@pytest.mark.parametrize("opts", [EXT4, {"volumeType": "directory"}], ids=["ext4", "directory"])
def test_containers_started_together_all_mount_and_nothing_stays_after_the_last(
    driver: RunningDriver, opts: dict[str, str]
) -> None:
    assert call(driver, "Create", {"Name": "shared", "Opts": opts})[0] == 200
    ids = [f"container-{i}" for i in range(CONTAINERS)]
    with ThreadPoolExecutor(CONTAINERS) as pool:
        replies = list(pool.map(lambda i: call(driver, "Mount", {"Name": "shared", "ID": i}), ids))
    assert [status for status, _ in replies] == [200] * CONTAINERS, replies
    assert len({str(reply["Mountpoint"]) for _, reply in replies}) == 1
    with ThreadPoolExecutor(CONTAINERS) as pool:
        replies = list(
            pool.map(lambda i: call(driver, "Unmount", {"Name": "shared", "ID": i}), ids)
        )
    assert [status for status, _ in replies] == [200] * CONTAINERS, replies
    assert mounted(driver) == []
    assert loops_under(driver.data_dir) == []
    assert call(driver, "Remove", {"Name": "shared"})[0] == 200


def test_a_mount_that_finishes_after_its_caller_gave_up_is_undone(
    driver: RunningDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert call(driver, "Create", {"Name": "late", "Opts": EXT4})[0] == 200
    docker = driver.driver.docker
    assert docker is not None
    named = docker.named
    real_attach = named._attach
    finished = threading.Event()

    def slow_attach(*args: object, **kwargs: object) -> Path:
        time.sleep(BUDGET + 0.5)
        try:
            return real_attach(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            finished.set()

    monkeypatch.setattr(named, "_attach", slow_attach)
    status, reply = call(driver, "Mount", {"Name": "late", "ID": "gave-up"})
    assert status == 503, reply
    assert finished.wait(30)
    (record,) = (driver.data_dir / "state" / "docker").iterdir()

    def undone() -> bool:  # the mount goes first, then the record says so
        return not mounted(driver) and not json.loads(record.read_text()).get("mount_ids")

    deadline = time.monotonic() + 30  # generous: the undo follows at once, on a busy machine too
    while not undone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mounted(driver) == [], "a mount nobody will ever unmount"
    assert json.loads(record.read_text()).get("mount_ids", []) == []
    assert call(driver, "Get", {"Name": "late"})[1]["Volume"]["Mountpoint"] == ""  # type: ignore[index]
    monkeypatch.setattr(named, "_attach", real_attach)
    status, reply = call(driver, "Mount", {"Name": "late", "ID": "next"})
    assert status == 200, reply
    assert call(driver, "Unmount", {"Name": "late", "ID": "next"})[0] == 200
    assert mounted(driver) == []
    assert call(driver, "Remove", {"Name": "late"})[0] == 200
