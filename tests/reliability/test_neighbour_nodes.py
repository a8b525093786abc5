"""Drivers of several nodes on one kernel, as kind runs them.

Every node of a kind cluster shares the host's kernel: every node sees every loop device,
and each node's driver sees its own data root at the same path (/var/lib/localvol-csi), so
the kernel names two nodes' images identically when their volume IDs agree (Docker volume
names are per node; a Docker volume `data` on two nodes has one ID). A driver must never
detach, mount, count or report another node's devices, images or mounts: not at start-up
reconciliation, nor in health, metrics or inspect. Each node's volumes here are in use
(staged, published, written) while the other node's driver is replaced.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from csi.host.loopdev import FileId
from tests.reliability import namespaces
from tests.reliability.lifecycle import BLOCK, EXT4, Life
from tests.reliability.namespaces import NamespacedDriver, Node
from tests.scrape import scrape
from tests.support.driver import free_port
from tests.support.host import file_id, loops_backed_by, mounts_under
from tests.support.invariants import assert_nothing_of, image_path
from tests.support.kubelet import DIRECTORY

REPO = Path(__file__).resolve().parents[2]
IN_USE = ("create", "stage", "publish", "write")


class NodeUnderTest:
    """One node: its driver (with /metrics on a port of its own) and its volumes, two of
    them with the same IDs as the other node's."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.port = free_port()
        self.starts = 0
        self.driver = self.start_driver()
        self.lives: list[Life] = []
        for flavour, name in (
            (EXT4, "same-name-ext4"),
            (DIRECTORY, "same-name-directory"),
            (BLOCK, f"block-of-{node.node_id}"),
        ):
            life = Life(self.driver, flavour, name=name)
            life.target = node.kubelet_root / "pods" / name / "volumes" / "vol"
            for op in IN_USE:
                life.do(op)
            if flavour is not DIRECTORY:
                node.remember(image_path(node.data_dir, life.volume_id))
            self.lives.append(life)

    def start_driver(self) -> NamespacedDriver:
        self.starts += 1
        driver = self.node.driver(f"driver-{self.starts}")
        driver.start(args=["--health-address", f"127.0.0.1:{self.port}"])
        return driver

    def replace_driver(self) -> None:
        """The driver pod replaced: stopped, and a new one reconciles and takes over."""
        assert self.driver.stop() == 0
        self.driver = self.start_driver()
        for life in self.lives:
            life.driver = self.driver

    def loop_lives(self) -> list[Life]:
        return [life for life in self.lives if life.flavour is not DIRECTORY]

    def devices(self) -> dict[str, list[str]]:
        """Each loop volume's devices, found by its image's identity."""
        found = {}
        for life in self.loop_lives():
            image = image_path(self.node.data_dir, life.volume_id)
            found[life.volume_id] = loops_backed_by(file_id(image), image.name)
        return found

    def in_use(self) -> tuple[dict[str, list[str]], list[str]]:
        return self.devices(), sorted(mounts_under(self.node.kubelet_root))

    def inspect(self) -> dict[str, Any]:
        """`localvol-csi inspect` as it runs in the node's driver container: the data root
        at the path every node's driver sees its own at."""
        view = self.driver.view
        inspect = [sys.executable, "-m", "csi", "inspect", "--data-dir", str(view)]
        argv = namespaces.in_view(self.node.data_dir, view, [*inspect, "--output", "json"])
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        parsed: dict[str, Any] = json.loads(done.stdout)
        return parsed

    def check_own_view(self) -> None:
        """Metrics and inspect count and report this node's volumes and devices only."""
        devices = self.devices()
        assert all(len(d) == 1 for d in devices.values()), devices
        metrics = scrape(self.port)
        for kind in ("loop-filesystem", "loop-block"):
            assert metrics.value("localvol_loop_devices_attached", kind=kind) == 1, kind
        view = self.inspect()
        assert view["unaccounted"] == []
        assert view["scratch"] == []
        volumes = {v["volume_id"]: v for v in view["volumes"]}
        assert set(volumes) == {life.volume_id for life in self.lives}
        for volume_id, volume in volumes.items():
            assert volume["healthy"], volume
            assert volume["loop_devices"] == devices.get(volume_id, [])

    def finish(self) -> None:
        """Every volume read back, torn down and deleted; nothing of them is left."""
        for life in self.lives:
            assert life.read_payload() == life.payload
            for op in ("unpublish", "unstage", "delete"):
                life.do(op)
        for life in self.lives:
            assert_nothing_of(self.node.data_dir, self.node.kubelet_root, life.volume_id)
        assert self.node.leftover_devices() == []


def test_a_driver_never_touches_another_nodes_volumes(tmp_path: Path) -> None:
    with namespaces.kind_nodes(tmp_path, 2) as (node_one, node_two):
        one, two = NodeUnderTest(node_one), NodeUnderTest(node_two)
        # Same IDs on both nodes: the kernel shows both images under one name.
        same = [life.volume_id for life in one.lives if life.name.startswith("same-name")]
        assert same == [life.volume_id for life in two.lives if life.name.startswith("same")]
        ext4_id = same[0]
        ids = {FileId(*file_id(image_path(n.data_dir, ext4_id))) for n in (node_one, node_two)}
        assert len(ids) == 2, "two images, not one"
        for replaced, other in ((two, one), (one, two)):
            before = other.in_use()
            replaced_before = replaced.in_use()
            replaced.replace_driver()
            assert other.in_use() == before, "the other node's devices or mounts changed"
            assert replaced.in_use() == replaced_before, "the node's own volumes were not kept"
            for node in (one, two):
                node.check_own_view()
            for life in [*one.lives, *two.lives]:
                assert life.read_payload() == life.payload
        # One node's volumes deleted, down to their images: the other's stay in use.
        kept = two.in_use()
        one.finish()
        assert two.in_use() == kept
        two.finish()
