"""What one call costs does not grow with the volumes a node holds: the file-system
operations (stats, opens, directory reads, writes, renames...) the driver makes for one
CreateVolume, one GetCapacity and one DeleteVolume are the same with 10 and with 2,000
volumes in its state. Work counted, not time."""

from __future__ import annotations

import builtins
import io
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from csi.layout import Layout
from csi.pb import csi_pb2
from tests.support.driver import RunningDriver, running_driver
from tests.support.held_volumes import write_held_volumes
from tests.support.kubelet import block_capability
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
    """Counts of the calls of COUNTED (and open()) while the block runs, from any thread."""
    counts: Counter[str] = Counter()

    def wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return real(*args, **kwargs)

        return counted

    with monkeypatch.context() as patch:
        for name in COUNTED:
            patch.setattr(os, name, wrap(f"os.{name}", getattr(os, name)))
        patch.setattr(builtins, "open", wrap("open", builtins.open))
        patch.setattr(io, "open", wrap("open", io.open))
        yield counts


def one_of_each(driver: RunningDriver, name: str) -> None:
    """A CreateVolume of each kind that promises room (a sparse image), a GetCapacity, and
    the DeleteVolume of what was made."""
    controller = driver.client.controller
    request = create_request(name, parameters={"volumeType": "loop"}, caps=[block_capability()])
    volume = controller.CreateVolume(request).volume.volume_id
    controller.GetCapacity(csi_pb2.GetCapacityRequest())
    controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume))


def work_with(held: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    data = tmp_path / f"held-{held}"
    write_held_volumes(Layout(data), held, in_use=2)
    with running_driver(data) as driver:
        one_of_each(driver, "warm-up")  # what the start left to read once
        with counting(monkeypatch) as counts:
            one_of_each(driver, "counted")
    return counts


def test_one_create_capacity_and_delete_cost_the_same_with_10_and_2000_volumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    few = work_with(10, tmp_path, monkeypatch)
    many = work_with(2000, tmp_path, monkeypatch)
    assert few, "nothing was counted: the counting misses the driver's calls"
    assert many == few
