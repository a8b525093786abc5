"""A loop volume's whole life, scraped over HTTP at each step: RPC counters and histograms,
the forked commands, the volume gauges, bytes on disk and the loop devices all move as the
calls say, and every series is gone or zero once the volume is deleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from csi.config import HostPort
from tests.scrape import Scrape, scrape, serving_metrics
from tests.support.driver import RunningDriver, running_driver
from tests.support.kubelet import EXT4, Kubelet

LOCAL = HostPort("127.0.0.1", 0)
KIND = "loop-filesystem"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RunningDriver, int]]:
    with (
        running_driver(tmp_path / "data", health_address=LOCAL) as driver,
        serving_metrics(driver.driver) as port,
    ):
        yield driver, port


def calls(s: Scrape, method: str, code: str = "OK") -> float:
    return s.value("localvol_rpc_requests_total", method=method, code=code)


def timed(s: Scrape, method: str) -> float:
    return s.value("localvol_rpc_duration_seconds_count", method=method, code="OK")


def test_lifecycle_moves_the_metrics(served: tuple[RunningDriver, int], tmp_path: Path) -> None:
    driver, port = served
    kubelet = Kubelet(driver.client, tmp_path / "kubelet", driver.data_dir)
    start = scrape(port)
    assert start.value("localvol_reconcile_runs_total", outcome="ok") == 1
    assert start.value("localvol_reconcile_duration_seconds") > 0

    volume_id = kubelet.create("metrics", EXT4)
    made = scrape(port)
    assert calls(made, "CreateVolume") - calls(start, "CreateVolume") == 1
    assert timed(made, "CreateVolume") - timed(start, "CreateVolume") == 1
    mkfs = made.value("localvol_host_commands_total", tool="mkfs.ext4", outcome="ok")
    assert mkfs - start.value("localvol_host_commands_total", tool="mkfs.ext4", outcome="ok") == 1
    assert made.value("localvol_host_command_duration_seconds_count", tool="mkfs.ext4") >= 1
    assert made.value("localvol_volumes", kind=KIND, phase="ready") == 1
    assert made.value("localvol_provisioned_bytes", kind=KIND) == EXT4.size
    assert 0 < made.value("localvol_used_bytes", holder="volume") < EXT4.size  # sparse
    assert made.value("localvol_loop_devices_attached", kind=KIND) == 0

    staging, target = kubelet.staging(volume_id), kubelet.target("pod")
    kubelet.stage(volume_id, staging, EXT4.cap())
    kubelet.publish(volume_id, staging, target, EXT4.cap())
    used = scrape(port)
    assert used.value("localvol_loop_devices_attached", kind=KIND) == 1
    assert calls(used, "NodeStageVolume") - calls(made, "NodeStageVolume") == 1
    assert calls(used, "NodePublishVolume") - calls(made, "NodePublishVolume") == 1
    # A failing call is counted under its code: publishing an unknown volume.
    with pytest.raises(Exception, match="NOT_FOUND"):
        kubelet.publish("vol-unknown", staging, kubelet.target("other"), EXT4.cap())
    assert calls(scrape(port), "NodePublishVolume", "NOT_FOUND") == 1

    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)
    end = scrape(port)
    assert end.value("localvol_loop_devices_attached", kind=KIND) == 0
    assert end.value("localvol_volumes", kind=KIND, phase="ready") == 0
    assert end.value("localvol_used_bytes", holder="volume") == 0
    for method in ("NodeUnpublishVolume", "NodeUnstageVolume", "DeleteVolume"):
        assert calls(end, method) - calls(used, method) == 1, method
        assert timed(end, method) - timed(used, method) == 1, method
    assert volume_id not in end.text
    assert end.value("localvol_scrape_errors", part="loop_devices") == 0
