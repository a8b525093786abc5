"""A node under stress while the others serve: its driver pod replaced while its volumes are
in use, its node container restarted (a reboot: everything unmounted and detached, then
systemd, containerd, the kubelet and the driver again), and its kubelet restarted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.e2e.cluster import DRIVER_NAMESPACE, Cluster, claim, on_node, pod, wait_until
from tests.e2e.conftest import WORKERS
from tests.e2e.host import engine, loop_devices_on

pytestmark = [pytest.mark.e2e, pytest.mark.disruptive]

WRITE = "head -c 2097152 /dev/urandom > /data/blob && md5sum /data/blob | cut -d' ' -f1"
READ = "md5sum /data/blob | cut -d' ' -f1"
CLASSES = {"ext4": "localvol-ext4", "xfs": "localvol-xfs", "dir": "localvol-directory"}
BLOCK_WRITE = (
    "head -c 1048576 /dev/urandom > /tmp/b && dd if=/tmp/b of=/dev/xvda bs=1M conv=fsync "
    "2>/dev/null && md5sum /tmp/b | cut -d' ' -f1"
)
BLOCK_READ = "dd if=/dev/xvda bs=1M count=1 2>/dev/null | md5sum | cut -d' ' -f1"


def image_of(cluster: Cluster, ns: str, claim_name: str) -> str:
    return str(cluster.image_of(ns, claim_name))


def volumes_on(cluster: Cluster, ns: str, node: str) -> tuple[dict[str, str], str]:
    """A pod on ``node`` per filesystem class and one with a raw block volume, each with
    data written; the data's checksums."""
    for short, storage_class in CLASSES.items():
        made = pod(short, claims={"/data": short})
        cluster.apply(ns, claim(short, storage_class), on_node(made, node))
    made = pod("block", devices={"/dev/xvda": "block"})
    cluster.apply(ns, claim("block", "localvol-block", volumeMode="Block"), on_node(made, node))
    cluster.wait_ready(ns, *CLASSES, "block")
    written = {short: cluster.exec(ns, short, f"{WRITE} && sync") for short in CLASSES}
    return written, cluster.exec(ns, "block", BLOCK_WRITE)


def assert_data(cluster: Cluster, ns: str, written: dict[str, str], block: str) -> None:
    for short in CLASSES:
        assert cluster.exec(ns, short, READ) == written[short]
    assert cluster.exec(ns, "block", BLOCK_READ) == block
    for short in ("ext4", "xfs", "block"):
        assert len(loop_devices_on(image_of(cluster, ns, short))) == 1


def bystander(cluster: Cluster, ns: str, node: str) -> str:
    """A pod with an ext4 volume on another node, its data written: it must not notice."""
    cluster.apply(
        ns,
        claim("bystander", "localvol-ext4", "64Mi"),
        on_node(pod("bystander", claims={"/data": "bystander"}), node),
    )
    cluster.wait_ready(ns, "bystander")
    return cluster.exec(ns, "bystander", f"{WRITE} && sync")


def restarts(cluster: Cluster, ns: str, name: str) -> int:
    statuses = cluster.core.read_namespaced_pod(name, ns).status.container_statuses or []
    return sum(s.restart_count for s in statuses)


def test_driver_restart_with_volumes_in_use(cluster: Cluster, ns: str) -> None:
    node = WORKERS[0]
    for short, storage_class in CLASSES.items():
        made = pod(short, claims={"/data": short})
        cluster.apply(ns, claim(short, storage_class), on_node(made, node))
    cluster.wait_ready(ns, *CLASSES)
    written = {short: cluster.exec(ns, short, f"{WRITE} && sync") for short in CLASSES}
    old = cluster.wait_driver_ready(node)
    cluster.core.delete_namespaced_pod(old, DRIVER_NAMESPACE)
    wait_until("a new driver pod", lambda: cluster.wait_driver_ready(node) != old)
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
        cluster.apply(ns, on_node(pod(short, claims={"/data": short}), node))
    cluster.delete_pod(ns, "dir")
    cluster.apply(ns, on_node(pod("dir", claims={"/data": "dir"}), node))
    cluster.wait_ready(ns, *CLASSES)
    for short in CLASSES:
        assert cluster.exec(ns, short, READ) == written[short]
        assert cluster.exec(ns, short, "cat /data/after") == "still-writable\n"
    for short in ("ext4", "xfs"):
        assert len(loop_devices_on(image_of(cluster, ns, short))) == 1
    # New volumes work with the new driver.
    made = on_node(pod("fresh", claims={"/data": "fresh"}), node)
    cluster.apply(ns, claim("fresh", "localvol-ext4"), made)
    cluster.wait_ready(ns, "fresh")
    cluster.exec(ns, "fresh", "echo ok > /data/ok")


def test_a_node_restarted_serves_its_volumes_again_and_the_others_never_stop(
    cluster: Cluster, ns: str
) -> None:
    """The worker's container restarted, as a machine reboots: its pods come back with
    their data, each image on one loop device again; the other worker's pod runs on."""
    node, other = WORKERS[1], WORKERS[0]
    written, block = volumes_on(cluster, ns, node)
    kept = bystander(cluster, ns, other)
    since = datetime.now(UTC)
    engine("restart", node)
    # Back when its new kubelet reports the node Ready (a restart quicker than the node
    # monitor's grace period never shows NotReady).
    wait_until(
        f"{node} Ready again",
        lambda: any(
            c.type == "Ready" and c.status == "True" and c.last_heartbeat_time >= since
            for c in cluster.core.read_node(node).status.conditions or []
        ),
        timeout=300,
    )
    cluster.wait_started_since(DRIVER_NAMESPACE, (cluster.driver_pod(node),), since, timeout=300)
    cluster.wait_started_since(ns, (*CLASSES, "block"), since, timeout=300)
    assert_data(cluster, ns, written, block)
    # The other node never noticed: its pod was not restarted and reads its data.
    assert restarts(cluster, ns, "bystander") == 0
    assert cluster.exec(ns, "bystander", READ) == kept


def test_a_kubelet_restart_leaves_running_pods_and_their_volumes_alone(
    cluster: Cluster, ns: str
) -> None:
    node = WORKERS[0]
    written, block = volumes_on(cluster, ns, node)
    before = {name: restarts(cluster, ns, name) for name in (*CLASSES, "block")}
    engine("exec", node, "systemctl", "restart", "kubelet")
    wait_until(
        "the kubelet back (a new pod with a new volume runs on the node)",
        lambda: (
            engine("exec", node, "systemctl", "is-active", "kubelet", check=False).strip()
            == "active"
        ),
    )
    made = on_node(pod("after", claims={"/data": "after"}), node)
    cluster.apply(ns, claim("after", "localvol-ext4", "64Mi"), made)
    cluster.wait_ready(ns, "after")
    assert {name: restarts(cluster, ns, name) for name in before} == before
    assert_data(cluster, ns, written, block)
