"""Teardown on a data root filled to its last block: unpublish, unstage and delete complete
for every kind of volume (each writes its record after the host's side is done, into the
room the driver keeps for that: csi.state.reserve), free the space, and leave state that
a restart reads back; a SIGKILL at each teardown step on the full root, then a restart and
the retry, end the same way. Creation on the full root is refused and changes nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from csi.pb import csi_pb2
from csi.state.reserve import RESERVE_BYTES
from tests.reliability.test_disk_full import (
    assert_exhausted,
    create,
    driver_on,
    ext4_root,
    fill,
    records,
)
from tests.support.driver import DriverProcess, crash_during
from tests.support.host import loops_under, mounts_under
from tests.support.invariants import assert_consistent
from tests.support.kubelet import BLOCK, DIRECTORY, MIB, XFS, Flavour

EXT4 = Flavour("ext4", {"volumeType": "loop", "fsType": "ext4"}, 16 * MIB, fs_type="ext4")
KINDS = [DIRECTORY, EXT4, XFS, BLOCK]
# Beside the test's volume: the driver's state and the filler.
BESIDE = 84 * MIB


def root_size(flavour: Flavour) -> int:
    """Room for the volume and BESIDE: no more, since every test writes the room full (xfs's
    smallest volume, 300 MiB, asks for the largest root)."""
    return flavour.size + BESIDE


@pytest.fixture
def full_root(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """An ext4 mounted at tmp_path/root, sized for the test's ``flavour`` parameter."""
    callspec = getattr(request.node, "callspec", None)  # absent on a test without parameters
    flavour = callspec.params.get("flavour", DIRECTORY) if callspec else DIRECTORY
    with ext4_root(tmp_path, root_size(flavour), "root") as root:
        yield root


@pytest.fixture
def driver(
    full_root: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[DriverProcess]:
    """A driver on the full root; armed from its start with the test's crash ``point``, if
    it has one (the steps before the point's operation never pass it)."""
    callspec = getattr(request.node, "callspec", None)
    fault = callspec.params.get("point", "") if callspec else ""
    with driver_on(full_root, tmp_path, fault=fault) as process:
        yield process


def free_blocks(root: Path) -> int:
    os.sync()
    return os.statvfs(root).f_bavail


def in_use(driver: DriverProcess, flavour: Flavour, name: str) -> tuple[str, Path, Path]:
    """A volume staged and published, as for a pod: its ID, staging path and target."""
    kubelet = driver.kubelet
    volume_id = create(driver, name, flavour)
    staging, target = kubelet.staging(volume_id), kubelet.target(name)
    kubelet.stage(volume_id, staging, flavour.cap())
    kubelet.publish(volume_id, staging, target, flavour.cap())
    return volume_id, staging, target


def fill_up(root: Path, flavour: Flavour, target: Path) -> None:
    """The root filled to its last block: by the pod, through a directory volume (what
    it is not held back from), or by a file beside the volumes."""
    fill(target if flavour is DIRECTORY else root)
    assert free_blocks(root) == 0


@pytest.mark.parametrize("flavour", KINDS, ids=lambda f: f.id)
def test_teardown_completes_on_a_full_root(
    driver: DriverProcess, full_root: Path, flavour: Flavour
) -> None:
    volume_id, staging, target = in_use(driver, flavour, f"filled-{flavour.id}")
    fill_up(full_root, flavour, target)
    kubelet = driver.kubelet
    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)
    assert records(driver.data_dir) == {}
    assert mounts_under(full_root) == []
    assert loops_under(full_root) == []
    if flavour is DIRECTORY:
        # The data that filled the root went with its volume, and the reserve came back.
        assert free_blocks(full_root) * os.statvfs(full_root).f_frsize > root_size(flavour) // 2
        assert (driver.data_dir / "state" / "reserve").stat().st_blocks * 512 >= RESERVE_BYTES
    assert driver.stop() == 0
    driver.start()
    listed = driver.client.controller.ListVolumes(csi_pb2.ListVolumesRequest())
    assert list(listed.entries) == []
    assert_consistent(driver.data_dir, driver.kubelet_root)


def test_nothing_new_is_made_while_the_reserve_cannot_be_kept(
    driver: DriverProcess, full_root: Path
) -> None:
    """After a teardown used the reserve and the root is still full, a new volume is refused
    (RESOURCE_EXHAUSTED, nothing written); once there is room, it is made."""
    volume_id, staging, target = in_use(driver, DIRECTORY, "first")
    filler = fill(full_root)
    kubelet = driver.kubelet
    kubelet.unpublish(volume_id, target)  # the reserve goes to this write
    assert not (driver.data_dir / "state" / "reserve").exists()
    before = records(driver.data_dir)
    assert_exhausted(lambda: create(driver, "late", DIRECTORY, 1))
    assert records(driver.data_dir) == before
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)
    filler.unlink()
    late = create(driver, "late", DIRECTORY, 1)
    assert (driver.data_dir / "state" / "reserve").stat().st_blocks * 512 >= RESERVE_BYTES
    kubelet.delete(late)
    assert driver.stop() == 0


TEARDOWN_POINTS = [
    ("unpublish:unmounted", KINDS),
    ("unstage:unmounted", [EXT4, XFS]),
    ("unstage:detached", KINDS),
    ("delete:unused", KINDS),
    ("delete:marked", KINDS),
    ("delete:removed", KINDS),
]


@pytest.mark.parametrize(
    ("point", "flavour"),
    [(p, f) for p, kinds in TEARDOWN_POINTS for f in kinds],
    ids=lambda v: v if isinstance(v, str) else v.id,
)
def test_a_kill_during_teardown_on_a_full_root(
    driver: DriverProcess, full_root: Path, point: str, flavour: Flavour
) -> None:
    volume_id, staging, target = in_use(driver, flavour, f"killed-{flavour.id}")
    fill_up(full_root, flavour, target)
    steps = [
        ("unpublish", lambda k: k.unpublish(volume_id, target)),
        ("unstage", lambda k: k.unstage(volume_id, staging)),
        ("delete", lambda k: k.delete(volume_id)),
    ]
    operation = point.split(":")[0]
    for name, step in steps:
        if name == operation:
            kubelet = driver.kubelet
            crash_during(driver, lambda s=step, k=kubelet: s(k))  # type: ignore[misc]
            driver.start()  # reconciled on the full root
        step(driver.kubelet)
    assert records(driver.data_dir) == {}
    assert mounts_under(full_root) == []
    assert loops_under(full_root) == []
    assert_consistent(driver.data_dir, driver.kubelet_root)
    assert driver.stop() == 0
