"""The node under stress: the driver pod replaced while its volumes are in use, and a
node reboot (everything unmounted and detached, then the kubelet and the driver again)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime

import pytest

from tests.e2e.cluster import DRIVER_NAMESPACE, NODE_DATA, REPO, Cluster, claim, pod, wait_until
from tests.e2e.host import loop_devices_on

pytestmark = [pytest.mark.e2e, pytest.mark.disruptive]

WRITE = "head -c 2097152 /dev/urandom > /data/blob && md5sum /data/blob | cut -d' ' -f1"
READ = "md5sum /data/blob | cut -d' ' -f1"
CLASSES = {"ext4": "localvol-ext4", "xfs": "localvol-xfs", "dir": "localvol-directory"}


def image_of(cluster: Cluster, ns: str, claim_name: str) -> str:
    return str(NODE_DATA / "images" / f"{cluster.volume_handle(ns, claim_name)}.img")


def test_driver_restart_with_volumes_in_use(cluster: Cluster, ns: str) -> None:
    for short, storage_class in CLASSES.items():
        cluster.apply(ns, claim(short, storage_class), pod(short, claims={"/data": short}))
    cluster.wait_ready(ns, *CLASSES)
    written = {short: cluster.exec(ns, short, f"{WRITE} && sync") for short in CLASSES}
    old = cluster.wait_driver_ready()
    cluster.core.delete_namespaced_pod(old, DRIVER_NAMESPACE)
    wait_until("a new driver pod", lambda: cluster.wait_driver_ready() != old)
    # Running pods keep their data, and can still write.
    for short in CLASSES:
        assert cluster.exec(ns, short, READ) == written[short]
        cluster.exec(ns, short, "echo still-writable > /data/after && sync")
    # The new driver unstages what the old one staged (its loop device is found by inode
    # although the kernel now shows its backing file relative to a mount that is gone) and
    # stages it again: one loop device per image throughout.
    for short in ("ext4", "xfs"):
        image = image_of(cluster, ns, short)
        assert len(loop_devices_on(image)) == 1
        cluster.delete_pod(ns, short)
        wait_until(
            f"{short}'s loop device detached", lambda image=image: not loop_devices_on(image)
        )
        cluster.apply(ns, pod(short, claims={"/data": short}))
    cluster.delete_pod(ns, "dir")
    cluster.apply(ns, pod("dir", claims={"/data": "dir"}))
    cluster.wait_ready(ns, *CLASSES)
    for short in CLASSES:
        assert cluster.exec(ns, short, READ) == written[short]
        assert cluster.exec(ns, short, "cat /data/after") == "still-writable\n"
    for short in ("ext4", "xfs"):
        assert len(loop_devices_on(image_of(cluster, ns, short))) == 1
    # New volumes work with the new driver.
    cluster.apply(ns, claim("fresh", "localvol-ext4"), pod("fresh", claims={"/data": "fresh"}))
    cluster.wait_ready(ns, "fresh")
    cluster.exec(ns, "fresh", "echo ok > /data/ok")


def test_node_reboot(cluster: Cluster, ns: str) -> None:
    block = claim("block", "localvol-block", volumeMode="Block")
    for short, storage_class in CLASSES.items():
        cluster.apply(ns, claim(short, storage_class), pod(short, claims={"/data": short}))
    cluster.apply(ns, block, pod("block", devices={"/dev/xvda": "block"}))
    cluster.wait_ready(ns, *CLASSES, "block")
    written = {short: cluster.exec(ns, short, f"{WRITE} && sync") for short in CLASSES}
    block_written = cluster.exec(
        ns,
        "block",
        "head -c 1048576 /dev/urandom > /tmp/b && dd if=/tmp/b of=/dev/xvda bs=1M conv=fsync "
        "2>/dev/null && md5sum /tmp/b | cut -d' ' -f1",
    )
    since = datetime.now(UTC)
    proc = subprocess.run([str(REPO / "hack" / "cluster-reboot")], check=False)
    assert proc.returncode == 0, "hack/cluster-reboot failed (its output is above)"
    cluster.wait_started_since(DRIVER_NAMESPACE, (cluster.driver_pod(),), since, timeout=300)
    cluster.wait_started_since(ns, (*CLASSES, "block"), since, timeout=300)
    for short in CLASSES:
        assert cluster.exec(ns, short, READ) == written[short]
    block_read = "dd if=/dev/xvda bs=1M count=1 2>/dev/null | md5sum | cut -d' ' -f1"
    assert cluster.exec(ns, "block", block_read) == block_written
    for short in ("ext4", "xfs", "block"):
        assert len(loop_devices_on(image_of(cluster, ns, short))) == 1
