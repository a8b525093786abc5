"""A SIGKILL at each step of every way a volume is made, then a restart: nothing stays
attached. For new filesystems (ext4, xfs, encrypted), restores and clones (filesystem and
raw block), inline volumes and the Docker plugin's volumes: the driver dies at the crash
point, the restarted driver reconciles, and then ``losetup`` (as a user would read it,
"(deleted)" entries included) shows no loop device on any file of the data root; the
retried call succeeds and the volume is whole."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from csi.pb import csi_pb2
from tests.integration.encryption_support import ENCRYPTED, KEY, secrets
from tests.support.docker_plugin import plugin_request
from tests.support.driver import DriverProcess, crash_during
from tests.support.invariants import assert_consistent
from tests.support.kubelet import MIB, XFS, Flavour, mount_capability
from tests.support.status import status_of

EXT4 = Flavour("ext4", {"volumeType": "loop", "fsType": "ext4"}, 32 * MIB, fs_type="ext4")
BLOCK = Flavour("block", {"volumeType": "loop"}, 16 * MIB, block=True)
NEW_IMAGE = ("create:record", "create:image", "create:set-up", "create:formatted", "create:renamed")
COPIED_FS = ("create:record", "create:set-up", "create:renamed")
COPIED_BLOCK = ("create:record", "create:renamed")
INLINE_ID = "csi-" + "a" * 64
INLINE_CONTEXT = {"csi.storage.k8s.io/ephemeral": "true", "size": "32Mi", "fsType": "ext4"}


def losetup_under(root: Path) -> list[str]:
    """``losetup --list`` rows whose backing file is (or was) under ``root``."""
    out = subprocess.run(
        ["losetup", "--list", "--noheadings", "--raw", "--output", "NAME,BACK-FILE"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if f" {root}/" in f" {line.split(' ', 1)[-1]}"]


@dataclass
class Way:
    """One way a volume is made: what it needs first, and the call that makes it."""

    id: str
    points: tuple[str, ...]
    prepare: Callable[[DriverProcess], dict[str, str]] | None  # a source made first
    make: Callable[[DriverProcess, dict[str, str]], None]
    args: tuple[str, ...] = ()


def _create(
    driver: DriverProcess, name: str, flavour: Flavour, **extra: object
) -> csi_pb2.CreateVolumeResponse:
    request = csi_pb2.CreateVolumeRequest(
        name=name,
        parameters=dict(flavour.params),
        capacity_range=csi_pb2.CapacityRange(required_bytes=flavour.size),
        volume_capabilities=[flavour.cap()],
        **extra,  # type: ignore[arg-type]
    )
    return driver.client.controller.CreateVolume(request)


def _a_source(flavour: Flavour) -> Callable[[DriverProcess], dict[str, str]]:
    def prepare(driver: DriverProcess) -> dict[str, str]:
        volume = _create(driver, "source", flavour).volume.volume_id
        snapshot = driver.client.controller.CreateSnapshot(
            csi_pb2.CreateSnapshotRequest(name="source-snap", source_volume_id=volume)
        ).snapshot.snapshot_id
        return {"volume": volume, "snapshot": snapshot}

    return prepare


def _new(flavour: Flavour, **extra: object) -> Callable[[DriverProcess, dict[str, str]], None]:
    def make(driver: DriverProcess, made: dict[str, str]) -> None:
        _create(driver, "made", flavour, **extra)

    return make


def _copy(flavour: Flavour, kind: str) -> Callable[[DriverProcess, dict[str, str]], None]:
    def make(driver: DriverProcess, made: dict[str, str]) -> None:
        source = (
            csi_pb2.VolumeContentSource(
                snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=made[kind])
            )
            if kind == "snapshot"
            else csi_pb2.VolumeContentSource(
                volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=made[kind])
            )
        )
        _create(driver, "made", flavour, volume_content_source=source)

    return make


def _inline(driver: DriverProcess, made: dict[str, str]) -> None:
    target = driver.kubelet.target("inline-pod")
    driver.client.node.NodePublishVolume(
        csi_pb2.NodePublishVolumeRequest(
            volume_id=INLINE_ID,
            target_path=str(target),
            volume_capability=mount_capability(),
            volume_context=INLINE_CONTEXT,
        )
    )


def _docker(driver: DriverProcess, made: dict[str, str]) -> None:
    plugin = driver.data_dir / "docker.sock"
    body: dict[str, object] = {"Name": "made", "Opts": {"size": "32Mi", "fsType": "ext4"}}
    try:
        status, reply = plugin_request(plugin, "/VolumeDriver.Create", body, timeout=60)
    except (OSError, http.client.HTTPException) as exc:
        # What a caller of a dead driver sees: the same as an RPC's UNAVAILABLE.
        raise _Unavailable(str(exc)) from None
    assert status == 200, reply


class _Unavailable(Exception):
    pass


# test_crash_points kills a plain CreateVolume (ext4, block, directory) at every step; here
# every other way a volume is made, at the steps where it holds a loop device, a scratch
# image or a record of its own: all of them for the inline and Docker volumes (their own
# records around the creation), the set-up and the ends elsewhere.
SET_UP = ("create:set-up", "create:formatted")
PATHS = [
    Way("xfs", SET_UP, None, _new(XFS)),
    Way("encrypted", SET_UP, None, _new(ENCRYPTED, secrets=secrets(KEY))),
    Way("restore-ext4", COPIED_FS[1:], _a_source(EXT4), _copy(EXT4, "snapshot")),
    Way("clone-ext4", COPIED_FS[1:], _a_source(EXT4), _copy(EXT4, "volume")),
    Way("restore-block", COPIED_BLOCK, _a_source(BLOCK), _copy(BLOCK, "snapshot")),
    Way("clone-block", COPIED_BLOCK, _a_source(BLOCK), _copy(BLOCK, "volume")),
    Way("inline", NEW_IMAGE, None, _inline),
    Way("docker", NEW_IMAGE, None, _docker, ("--docker-plugin-socket", "{data}/docker.sock")),
]
CASES = [(p, point) for p in PATHS for point in p.points]


@pytest.mark.parametrize(("way", "point"), CASES, ids=[f"{p.id}-{point}" for p, point in CASES])
def test_a_kill_while_a_volume_is_made_leaves_no_loop_device(
    driver_process: DriverProcess, way: Way, point: str
) -> None:
    driver = driver_process
    args = [a.format(data=driver.data_dir) for a in way.args]
    made: dict[str, str] = {}
    if way.prepare is not None:  # by a driver without the fault
        driver.start(args=args)
        made = way.prepare(driver)
        driver.stop()
    driver.start(fault=point, args=args)
    if way.make is _docker:
        with pytest.raises(_Unavailable):
            way.make(driver, made)
        assert driver.wait_exit() == -9
    else:
        crash_during(driver, lambda: way.make(driver, made))
    driver.start(args=args)  # reconciled
    assert losetup_under(driver.data_dir) == [], "loop devices left by the killed creation"
    way.make(driver, made)  # the orchestrator's retry
    # An inline volume's staging mount is under the data root, where the check of settled
    # mounts (the kubelet's paths) does not look.
    assert_consistent(driver.data_dir, driver.kubelet_root, settled=way.make is not _inline)
    if way.make is _inline:
        driver.kubelet.unpublish(INLINE_ID, driver.kubelet.target("inline-pod"))
    assert driver.stop() == 0


def test_a_tool_left_running_by_a_killed_driver_is_stopped_before_work_resumes(
    driver_process: DriverProcess, tmp_path: Path
) -> None:
    """mkfs outlives a SIGKILLed driver (the kernel does not end a parent's children): the
    restarted driver stops it before it touches any volume, so no image ever has two
    writers; the retried creation then makes the volume whole."""
    driver = driver_process
    shims, pid_file = tmp_path / "shims", tmp_path / "mkfs.pid"
    shims.mkdir()
    real = shutil.which("mkfs.ext4")
    assert real is not None
    shim = shims / "mkfs.ext4"
    shim.write_text(f'#!/bin/sh\necho $$ > {pid_file}\nsleep 120\nexec {real} "$@"\n')
    shim.chmod(0o755)
    driver.start(path_prefix=shims)
    proc = driver.proc
    assert proc is not None
    caller = threading.Thread(target=lambda: status_of(lambda: _new(EXT4)(driver, {})))
    caller.start()
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    orphan = int(pid_file.read_text())
    proc.kill()
    assert driver.wait_exit() == -9
    caller.join()
    assert Path(f"/proc/{orphan}").exists(), "the tool should have outlived the driver"
    try:
        driver.start()  # ready only after the orphan is gone
        assert not _running(orphan), "the killed driver's mkfs still runs beside the new one"
    finally:
        if _running(orphan):
            os.killpg(orphan, signal.SIGKILL)  # the test's own shim, in its own group
    assert "event=orphan_tool_killed" in driver.log()
    _new(EXT4)(driver, {})
    assert_consistent(driver.data_dir, driver.kubelet_root)
    assert driver.stop() == 0


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
