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

    What grows with the host rather than with the volumes held counts once, as one call:
    a wait for the kernel to let go of a loop device (how often it looks at /sys is a
    matter of time), a reading of the host's loop devices (a read per device) and the
    identification of every bound one (an open per device: a raw block volume's unstage
    and delete look for the kubelet's device stacked on theirs). A kind cluster beside the
    tests attaches and detaches its own devices meanwhile; each of the three once made one
    side two opens bigger than the other."""
    counts: Counter[str] = Counter()
    inside_once = threading.local()

    def wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if not getattr(inside_once, "now", False):
                counts[name] += 1
            return real(*args, **kwargs)

        return counted

    def counted_once(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            outer = getattr(inside_once, "now", False)
            inside_once.now = True
            try:
                return real(*args, **kwargs)
            finally:
                inside_once.now = outer

        return call

    with monkeypatch.context() as patch:
        for name in COUNTED:
            patch.setattr(os, name, wrap(f"os.{name}", getattr(os, name)))
        patch.setattr(builtins, "open", wrap("open", builtins.open))
        patch.setattr(io, "open", wrap("open", io.open))
        for name in ("_wait_while", "_shown_names", "all_devices"):
            patch.setattr(loopdev, name, counted_once(f"loopdev.{name}", getattr(loopdev, name)))
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
