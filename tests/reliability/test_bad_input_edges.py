"""Bad input, continued: node paths, flags and capabilities the driver does not yet
handle safely.

Each test guards against one driver bug found by these suites (now fixed). Each
runs its own driver and cleans up by force before asserting, so a bug that leaves a mount
behind still reports as this test's failure, not as a leak in the next one.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from csi.pb import csi_pb2
from tests.reliability.hostile import DIRECTORY, EXT4, listing, make_canary
from tests.support.driver import running_driver
from tests.support.host import mounts_under
from tests.support.invariants import clean_up_host, read_record
from tests.support.kubelet import Kubelet
from tests.support.prerequisites import need_root
from tests.support.status import status

Code = grpc.StatusCode
OK = Code.OK


@contextmanager
def fresh(tmp_path: Path) -> Iterator[tuple[Kubelet, Path]]:
    """A driver on ``tmp_path/data``, a canary beside it; everything removed afterwards."""
    need_root()
    canary = make_canary(tmp_path / "canary")
    try:
        with running_driver(tmp_path / "data") as running:
            yield Kubelet(running.client, tmp_path / "kubelet", running.data_dir), canary
    finally:
        clean_up_host(tmp_path)


def test_unstage_at_a_wrong_path_keeps_the_volume_staged(tmp_path: Path) -> None:
    with fresh(tmp_path) as (caller, canary):
        volume_id = caller.create("precious", DIRECTORY)
        staging = caller.staging("precious")
        caller.stage(volume_id, staging)
        (staging / "data.txt").write_text("precious")
        status(lambda: caller.unstage(volume_id, canary))  # well formed, but not where it is
        record = read_record(tmp_path / "data", volume_id)
        deleted, _ = status(lambda: caller.delete(volume_id))
        survived = (staging / "data.txt").exists()
        status(lambda: caller.unstage(volume_id, staging))
        status(lambda: caller.delete(volume_id))
    assert record is not None
    assert record["staging_path"] == str(staging), "the record forgot the real staging path"
    assert deleted is Code.FAILED_PRECONDITION, f"deleting a staged volume: {deleted.name}"
    assert survived, "a staged volume's data was deleted"


@pytest.mark.parametrize("place", ["empty-dir", "non-empty-dir", "foreign-mount"])
def test_unpublish_leaves_alone_what_it_never_published(tmp_path: Path, place: str) -> None:
    with fresh(tmp_path) as (caller, canary):
        volume_id = caller.create("dir", DIRECTORY)
        path = {"empty-dir": canary / "empty", "non-empty-dir": canary}.get(place)
        if path is None:
            path = tmp_path / "foreign"
            path.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "foreign", str(path)], check=True)
        before = listing(canary)
        code, details = status(lambda: caller.unpublish(volume_id, path))
        still_mounted = str(path) in mounts_under(tmp_path)
        after = listing(canary)
        caller.delete(volume_id)
    assert code is OK, f"{code.name}: {details}"
    assert after == before, "the canary changed"
    assert still_mounted or place != "foreign-mount", "a mount the driver never made is gone"


def test_publish_onto_an_existing_directory_then_unpublish(tmp_path: Path) -> None:
    with fresh(tmp_path) as (caller, canary):
        volume_id = caller.create("vol", EXT4)
        staging = caller.staging("vol")
        caller.stage(volume_id, staging)
        before = listing(canary)
        published, _ = status(lambda: caller.publish(volume_id, staging, canary))
        unpublished = status(lambda: caller.unpublish(volume_id, canary))
        after = listing(canary)
        caller.unstage(volume_id, staging)
        caller.delete(volume_id)
    assert published in (OK, Code.FAILED_PRECONDITION, Code.INVALID_ARGUMENT), published
    assert unpublished[0] is OK, unpublished
    assert after == before, "the canary changed"


@pytest.mark.parametrize("rpc", ["NodeGetVolumeStats", "NodeExpandVolume"])
def test_an_overlong_volume_path_is_refused(tmp_path: Path, rpc: str) -> None:
    with fresh(tmp_path) as (caller, _):
        volume_id = caller.create("dir", DIRECTORY)
        node, path = caller.client.node, "/" + "x/" * 10_000
        calls = {
            "NodeGetVolumeStats": lambda: node.NodeGetVolumeStats(
                csi_pb2.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=path)
            ),
            "NodeExpandVolume": lambda: node.NodeExpandVolume(
                csi_pb2.NodeExpandVolumeRequest(volume_id=volume_id, volume_path=path)
            ),
        }
        code, details = status(calls[rpc])
        caller.delete(volume_id)
    assert code in (Code.INVALID_ARGUMENT, Code.NOT_FOUND), f"{code.name}: {details[:200]}"


def test_flags_that_cannot_be_mount_options_are_invalid(tmp_path: Path) -> None:
    flags = ["../canary", "a\\b", ".", "..", "/abs/path", "\u202enoexec", "\uff56ol"]
    codes: dict[str, Code] = {}
    with fresh(tmp_path) as (caller, _):
        volume_id = caller.create("vol", EXT4)
        staging = caller.staging("vol")
        for flag in flags:
            stage = lambda f=flag: caller.stage(volume_id, staging, flags=(f,))  # noqa: E731
            codes[flag] = status(stage)[0]
            caller.unstage(volume_id, staging)
        caller.delete(volume_id)
    wrong = {f: c.name for f, c in codes.items() if c is not Code.INVALID_ARGUMENT}
    assert not wrong, f"not refused at the edge: {wrong}"


@pytest.mark.parametrize("mode", [99, -1])
def test_an_unknown_access_mode_is_refused(tmp_path: Path, mode: int) -> None:
    cap = csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode),  # type: ignore[arg-type]
    )
    with fresh(tmp_path) as (caller, _):
        ctl, node = caller.client.controller, caller.client.node
        volume_id = caller.create("vol", DIRECTORY)
        staging, target = caller.staging("vol"), caller.target("pod")
        calls = {
            "CreateVolume": lambda: ctl.CreateVolume(
                csi_pb2.CreateVolumeRequest(name="new", volume_capabilities=[cap])
            ),
            "ValidateVolumeCapabilities": lambda: ctl.ValidateVolumeCapabilities(
                csi_pb2.ValidateVolumeCapabilitiesRequest(
                    volume_id=volume_id, volume_capabilities=[cap]
                )
            ),
            "GetCapacity": lambda: ctl.GetCapacity(
                csi_pb2.GetCapacityRequest(volume_capabilities=[cap])
            ),
            "NodeStageVolume": lambda: node.NodeStageVolume(
                csi_pb2.NodeStageVolumeRequest(
                    volume_id=volume_id, staging_target_path=str(staging), volume_capability=cap
                )
            ),
            "NodePublishVolume": lambda: node.NodePublishVolume(
                csi_pb2.NodePublishVolumeRequest(
                    volume_id=volume_id,
                    staging_target_path=str(staging),
                    target_path=str(target),
                    volume_capability=cap,
                )
            ),
        }
        codes = {rpc: status(call)[0] for rpc, call in calls.items()}
        caller.delete(volume_id)
    wrong = {rpc: c.name for rpc, c in codes.items() if c in (Code.INTERNAL, Code.UNKNOWN)}
    assert not wrong, f"an unknown access mode ended as: {wrong}"
