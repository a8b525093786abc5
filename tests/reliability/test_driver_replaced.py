"""A driver pod replaced by another: the new driver knows the old one's loop devices.

Each driver runs in a mount namespace of its own and reaches the data dir through its own
bind mount (tests/reliability/namespaces.py), as DaemonSet pods do. Once the old driver
is gone the kernel names its devices' backing files ``/images/<id>.img``; a driver that
looked devices up by that name left them attached at unstage and attached a second device
to the same image at the next stage (two mounts of one filesystem). The new driver must
find them by the image's identity: at stage, unstage, expansion, delete, reconciliation
and in the volume's health.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from csi.pb import csi_pb2
from tests.integration.support import attach_in_a_vanished_namespace, wait_for_backing_name
from tests.legacy_condition import legacy_condition
from tests.reliability import namespaces
from tests.reliability.lifecycle import BLOCK, EXT4, LOOPS, Life
from tests.reliability.namespaces import NamespacedDriver, Node
from tests.support.host import loops_backed_by, loops_for, mounts_at, mounts_under
from tests.support.invariants import image_path
from tests.support.kubelet import Flavour

IN_USE = ("create", "stage", "publish", "write")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with namespaces.node(tmp_path) as made:
        yield made


class HandOver:
    """Driver A makes the volume and does ``ops``, then is stopped; driver B takes over."""

    def __init__(
        self, node: Node, flavour: Flavour, ops: tuple[str, ...], *, shared: bool = True
    ) -> None:
        self.node = node
        old = node.driver("a", kubelet_shared=shared)
        self.life = Life(old, flavour)
        old.start()
        for op in ops:
            if op == "write" and not shared:
                self._write_in_the_old_namespace(old)
            else:
                self.life.do(op)
        self.image = image_path(node.data_dir, self.life.volume_id)
        self.identity = node.remember(self.image)
        (self.device,) = loops_backed_by(self.identity, self.image.name)
        assert old.stop() == 0
        # What the new driver's kernel says: the name is relative to A's vanished bind mount.
        name = f"/images/{self.image.name}"
        assert wait_for_backing_name(self.device, name) == name
        assert loops_for(self.image) == [], "by its name, the device is lost"

    def _write_in_the_old_namespace(self, old: NamespacedDriver) -> None:
        """The pod's write, where the old driver's mounts are (not on the host)."""
        assert old.proc is not None
        payload = b"written through the old driver's mount\n" * 64
        script = 'cat > "$1/payload" && sync "$1/payload"'
        argv = ["nsenter", "--target", str(old.proc.pid), "--mount", "--", "sh", "-c", script]
        done = subprocess.run(
            [*argv, "sh", str(self.life.target)], input=payload, capture_output=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert not (self.life.target / "payload").exists(), "the host saw the old mount"
        self.life.payload = payload

    def start_new_driver(self) -> None:
        new = self.node.driver("b")
        self.life.driver = new
        new.start()

    def devices(self) -> list[str]:
        return loops_backed_by(self.identity, self.image.name)


@pytest.mark.parametrize("flavour", LOOPS, ids=lambda f: f.id)
def test_new_driver_restages_expands_unstages_and_deletes(node: Node, flavour: Flavour) -> None:
    moved = HandOver(node, flavour, IN_USE)
    life = moved.life
    moved.start_new_driver()
    assert moved.devices() == [moved.device], "start-up detached a device in use"

    # The kubelet stages again after a driver restart: the device is reused, not doubled.
    life.do("stage")
    assert moved.devices() == [moved.device], "a second loop device on one image"
    if life.flavour.fs_type:
        staged = [m.source for m in mounts_at(life.staging)]
        assert staged == [moved.device], f"staging mounts {staged}"
    life.verify("stage")

    life.do("expand")  # the device is found and told the new size (ext4 may restage)
    life.verify("expand")

    life.do("unpublish")
    life.do("unstage")
    assert moved.devices() == [], "unstage left the old driver's device attached"
    assert mounts_under(node.kubelet_root) == []

    life.do("stage")
    assert len(moved.devices()) == 1, f"restage: devices {moved.devices()}"
    life.do("publish")
    life.verify("publish")
    life.do("unpublish")
    life.do("unstage")

    # A device an old driver left attached to an unstaged volume (what unstage used to do):
    # delete finds it under its relative name, detaches it and removes the image.
    stray = attach_in_a_vanished_namespace(
        node.data_dir, f"images/{moved.image.name}", node.views / "old"
    )
    assert wait_for_backing_name(stray, f"/images/{moved.image.name}")
    life.do("delete")
    assert moved.devices() == [], "delete left a device on the volume's image"
    assert not moved.image.exists()
    life.verify("delete")


def test_start_up_detaches_an_unused_device_of_the_old_driver(node: Node) -> None:
    """The old driver's mounts ended with its namespace, its device did not: unused, it is
    detached at start-up (found by inode), and the kubelet's restage attaches one device."""
    moved = HandOver(node, EXT4, IN_USE, shared=False)
    life = moved.life
    assert mounts_under(node.kubelet_root) == [], "the old driver's mounts outlived it"
    moved.start_new_driver()
    assert moved.devices() == [], "start-up left an unused device attached"
    assert "detached=1" in life.driver.log()

    life.do("stage")
    assert len(moved.devices()) == 1
    life.do("publish")
    life.verify("publish")  # the data written through the old driver's mount is there
    life.finish()
    assert moved.devices() == []


def test_start_up_adopts_a_staged_block_device_of_the_old_driver(node: Node) -> None:
    """A staged block volume is its loop device: start-up keeps it, and publish binds that
    very device instead of attaching another."""
    moved = HandOver(node, BLOCK, ("create", "stage"), shared=False)
    life = moved.life
    moved.start_new_driver()
    assert moved.devices() == [moved.device], "start-up detached a staged block device"

    life.do("publish")
    assert os.stat(life.target).st_rdev == os.stat(moved.device).st_rdev
    assert moved.devices() == [moved.device]
    life.do("write")
    life.verify("write")
    life.finish()
    assert moved.devices() == []


@pytest.mark.parametrize("flavour", LOOPS, ids=lambda f: f.id)
def test_new_driver_reports_the_volume_healthy(node: Node, flavour: Flavour) -> None:
    moved = HandOver(node, flavour, IN_USE)
    life = moved.life
    moved.start_new_driver()
    healthy = "volume is healthy"

    stats = life.driver.kubelet.stats(life.volume_id, life.target)
    assert legacy_condition(stats) == (False, healthy)
    listed = life.driver.client.controller.ListVolumes(csi_pb2.ListVolumesRequest())
    (entry,) = listed.entries
    assert legacy_condition(entry.status) == (False, healthy)
    life.finish()
