"""What one call costs does not grow with the volumes a node holds: the file-system
operations (stats, opens, directory reads, writes, renames...) the driver makes for one
volume's life (create, stage, publish, unpublish, unstage, delete) and one GetCapacity are
the same with 10 and with 2,000 volumes in its state; a start reads each idle volume once.
Work counted, not time."""

from __future__ import annotations

import builtins
import io
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from csi.config import QuotaMode
from csi.host import loopdev
from csi.layout import Layout
from csi.pb import csi_pb2
from csi.reconcile import reconcile
from csi.state.store import GroupSnapshotStore, SnapshotStore, StateStore
from csi.tighten import tighten
from csi.volumes.groups import GroupSnapshots
from csi.volumes.manager import Volumes
from csi.volumes.snapshots import Snapshots
from tests.support.driver import RunningDriver, running_driver
from tests.support.held_volumes import write_held_volumes
from tests.support.kubelet import Kubelet, block_capability
from tests.unit.support import create_request

# Every os call a driver makes on files, and the builtin open.
COUNTED = (
    "stat",
    "lstat",
    "fstat",
    "statvfs",
    "open",
    "scandir",
    "listdir",
    "mkdir",
    "rmdir",
    "unlink",
    "rename",
    "replace",
    "fsync",
    "truncate",
    "ftruncate",
    "read",
    "write",
)


@contextmanager
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts of the calls of COUNTED (and open()) while the block runs, from any thread.

    A wait for the kernel to let go of a loop device counts once: how often it looks at
    /sys meanwhile is a matter of time, not of the volumes held (one more look, two more
    opens, once made one side differ)."""
    counts: Counter[str] = Counter()
    waiting = threading.local()

    def wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if not getattr(waiting, "now", False):
                counts[name] += 1
            return real(*args, **kwargs)

        return counted

    def wait_counted_once(real: Callable[[Callable[[], bool]], None]) -> Callable[..., None]:
        def wait(pending: Callable[[], bool]) -> None:
            counts["loopdev._wait_while"] += 1
            waiting.now = True
            try:
                real(pending)
            finally:
                waiting.now = False

        return wait

    with monkeypatch.context() as patch:
        for name in COUNTED:
            patch.setattr(os, name, wrap(f"os.{name}", getattr(os, name)))
        patch.setattr(builtins, "open", wrap("open", builtins.open))
        patch.setattr(io, "open", wrap("open", io.open))
        patch.setattr(loopdev, "_wait_while", wait_counted_once(loopdev._wait_while))
        yield counts


def one_of_each(driver: RunningDriver, name: str) -> None:
    """A volume that promises room (a sparse image) made, staged, published, unpublished,
    unstaged and deleted, with a GetCapacity while it is in use."""
    controller, cap = driver.client.controller, block_capability()
    request = create_request(name, parameters={"volumeType": "loop"}, caps=[cap])
    volume = controller.CreateVolume(request).volume.volume_id
    kubelet = Kubelet(driver.client, driver.data_dir.parent / "kubelet", driver.data_dir)
    staging, target = kubelet.staging(volume), kubelet.target(name)
    kubelet.stage(volume, staging, cap)
    kubelet.publish(volume, staging, target, cap)
    controller.GetCapacity(csi_pb2.GetCapacityRequest())
    kubelet.unpublish(volume, target)
    kubelet.unstage(volume, staging)
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume))


def work_with(held: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    data = tmp_path / f"held-{held}" / "data"
    write_held_volumes(Layout(data), held, in_use=2)
    with running_driver(data) as driver:
        one_of_each(driver, "warm-up")  # what the start left to read once
        with counting(monkeypatch) as counts:
            one_of_each(driver, "counted")
    return counts


def test_a_volumes_life_and_a_capacity_question_cost_the_same_with_10_and_2000_volumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    few = work_with(10, tmp_path, monkeypatch)
    many = work_with(2000, tmp_path, monkeypatch)
    assert few, "nothing was counted: the counting misses the driver's calls"
    assert many == few


def start_up_work(held: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """The calls of the reconciliation a start runs, over ``held`` idle volumes."""
    layout = Layout(tmp_path / f"start-{held}" / "data")
    write_held_volumes(layout, held)
    tighten(layout)  # the held volumes' files are written with the umask's modes
    volumes = Volumes(layout, StateStore(layout), QuotaMode.OFF)
    snapshots = Snapshots(volumes, SnapshotStore(layout))
    with counting(monkeypatch) as counts:
        report = reconcile(
            volumes, snapshots, GroupSnapshots(snapshots, GroupSnapshotStore(layout))
        )
    assert report.volumes == held
    assert not report.failed
    return counts


def test_a_start_reads_each_idle_volume_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per idle volume, the start reads its record (one open) and checks the modes of its
    record and its image (an lstat each), and nothing else: an image with no loop device
    attached is not looked at again to find one."""
    few = start_up_work(10, tmp_path, monkeypatch)
    many = start_up_work(1010, tmp_path, monkeypatch)
    per_volume = {name: (many[name] - few[name]) / 1000 for name in many | few}
    assert {name: n for name, n in per_volume.items() if n} == {"open": 1, "os.lstat": 2}
