"""The driver restarted on one node, then rolled over every node, while ext4, xfs, raw block
and directory volumes are in use on all three: each node's driver keeps to its own loop
devices and mounts (all nodes share the host's kernel and loop devices), and no write of a
pod is lost."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from csi.host import loopdev
from csi.host.loopdev import FileId
from tests.e2e.cluster import DRIVER_NAMESPACE, Cluster, claim, pod, wait_until
from tests.e2e.conftest import CONTROL_PLANE, WORKERS
from tests.e2e.host import KIND_DATA, node_pid

# Disruptive: every node's driver goes away for a moment (the storage suite, beside the
# other tests, would see its calls fail).
pytestmark = [pytest.mark.e2e, pytest.mark.disruptive]

NODES = (CONTROL_PLANE, *WORKERS)
DRIVER_PODS = "app.kubernetes.io/name=localvol-csi-node"
# One pod per node and class, each writing a numbered record every 0.2 s: a line appended
# to a file, or on a raw block volume a fixed-size record at its number's offset (written
# through to the device).
FILESYSTEMS = {"localvol-ext4": "48Mi", "localvol-xfs": "300Mi", "localvol-directory": "48Mi"}
BLOCK = {"localvol-block": "48Mi"}
CLASSES = {**FILESYSTEMS, **BLOCK}
LOOP_CLASSES = ("localvol-ext4", "localvol-xfs", "localvol-block")
DEVICE = "/dev/xvda"
RECORD = 9  # "%08d\n"
WRITER = "i=0; while true; do i=$((i+1)); echo $i >> /data/log; sync /data/log; sleep 0.2; done"
BLOCK_WRITER = (
    "i=0; while true; do i=$((i+1)); printf '%08d\\n' $i | "
    f"dd of={DEVICE} bs={RECORD} seek=$((i-1)) conv=notrunc,fsync 2>/dev/null; sleep 0.2; done"
)


def node_view(node: str, volumes: Volumes) -> tuple[frozenset[str], frozenset[str]]:
    """What one node holds of the host's kernel for the test's ``volumes``: their mounts in
    the node's mount namespace (below the kubelet's CSI directories), and the loop devices
    backed by their images in its data root, found by inode (the names the kernel shows are
    relative to the data root's mount inside the node: every node's look alike). An earlier
    test's volumes, still going away, are not the test's to watch."""
    mountinfo = Path(f"/proc/{node_pid(node)}/mountinfo").read_text().splitlines()
    mounts = frozenset(
        point
        for point in (line.split()[4] for line in mountinfo)
        if ("/kubernetes.io~csi/" in point or "/csi/volumeDevices/" in point)
        and any(f"/{pv}" in point for pv in volumes.pvs)
    )
    images = {
        FileId.of(image): image.name
        for image in (KIND_DATA / node / "images").glob("*.img")
        if image.stem in volumes.handles
    }
    loops = frozenset(
        f"{device.path}:{images[device.backing]}"
        for device in loopdev.all_devices()
        if device.backing in images
    )
    return mounts, loops


@dataclass(frozen=True)
class Volumes:
    """The test's volumes: PersistentVolume names and volume handles (image names)."""

    pvs: frozenset[str]
    handles: frozenset[str]

    @classmethod
    def of(cls, cluster: Cluster, namespace: str, claims: list[str]) -> Volumes:
        return cls(
            frozenset(cluster.claim(namespace, c).spec.volume_name for c in claims),
            frozenset(cluster.volume_handle(namespace, c) for c in claims),
        )


def views(cluster: Cluster, namespace: str, claims: list[str]) -> dict[str, Any]:
    volumes = Volumes.of(cluster, namespace, claims)
    return {node: node_view(node, volumes) for node in NODES}


def writers_on_every_node(cluster: Cluster, namespace: str) -> list[str]:
    names = []
    for node in NODES:
        for storage_class, size in CLASSES.items():
            name = f"{node.removeprefix('localvol-')}-{storage_class.removeprefix('localvol-')}"
            if storage_class in BLOCK:
                made = claim(name, storage_class, size, volumeMode="Block")
                spec: dict[str, Any] = pod(name, BLOCK_WRITER, devices={DEVICE: name})
            else:
                made = claim(name, storage_class, size)
                spec = pod(name, WRITER, claims={"/data": name})
            spec["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
            spec["spec"]["tolerations"] = [{"operator": "Exists"}]
            cluster.apply(namespace, made, spec)
            names.append(name)
    cluster.wait_ready(namespace, *names, timeout=300)
    return names


def lines_written(cluster: Cluster, namespace: str, name: str) -> list[int]:
    if name.endswith("-block"):
        # The records up to the first never written (zeros: the image is sparse).
        raw = cluster.exec(namespace, name, f"head -c 1048576 {DEVICE} | tr -d '\\000'")
        return [int(n) for n in raw.split()]
    return [int(n) for n in cluster.exec(namespace, name, "cat /data/log").split()]


def driver_pod_on(cluster: Cluster, node: str) -> str:
    """The node's one driver pod not on its way out ("" while there is none, or two)."""
    pods = cluster.core.list_namespaced_pod(
        DRIVER_NAMESPACE, label_selector=DRIVER_PODS, field_selector=f"spec.nodeName={node}"
    ).items
    live = [p.metadata.name for p in pods if p.metadata.deletion_timestamp is None]
    return str(live[0]) if len(live) == 1 else ""


def assert_unbroken(cluster: Cluster, namespace: str, names: list[str]) -> None:
    """Every writer is still Ready, and its log counts 1, 2, 3... without a gap: no write
    was lost while the driver was away."""
    for name in names:
        assert cluster.pod_ready(namespace, name), f"{name} is not Ready"
        written = lines_written(cluster, namespace, name)
        assert written == list(range(1, len(written) + 1)), f"{name}: {written[-5:]}"


def test_a_driver_restart_on_each_node_leaves_every_other_node_as_it_was(
    cluster: Cluster, ns: str
) -> None:
    names = writers_on_every_node(cluster, ns)
    before = views(cluster, ns, names)
    for node in NODES:
        mounts, loops = before[node]
        # Every volume's publish (a bind mount of the device, for the block one) is there.
        assert len(mounts) >= len(CLASSES), (node, sorted(mounts))
        assert len(loops) == len(LOOP_CLASSES), (node, sorted(loops))
    for node in NODES:
        old = driver_pod_on(cluster, node)
        cluster.delete_pod(DRIVER_NAMESPACE, old)
        wait_until(
            f"a new driver pod on {node}",
            lambda n=node, o=old: driver_pod_on(cluster, n) not in ("", o),
        )
        cluster.wait_ready(DRIVER_NAMESPACE, driver_pod_on(cluster, node))
        # Every node's volumes as they were: the restarted driver reconciled its own and
        # touched no other node's (same mounts, same loop devices on the same images).
        assert views(cluster, ns, names) == before
    assert_unbroken(cluster, ns, names)


def test_a_rolling_update_of_the_driver_loses_no_write(cluster: Cluster, ns: str) -> None:
    names = writers_on_every_node(cluster, ns)
    held = views(cluster, ns, names)
    before = {name: len(lines_written(cluster, ns, name)) for name in names}
    daemonset = cluster.apps.read_namespaced_daemon_set("localvol-csi-node", DRIVER_NAMESPACE)
    generation = daemonset.metadata.generation
    # A new argument in the pod template: the DaemonSet rolls its pods one node at a time.
    cluster.kubectl(
        "-n",
        DRIVER_NAMESPACE,
        "set",
        "env",
        "daemonset/localvol-csi-node",
        "-c",
        "driver",
        "LOCALVOL_ROLLOUT_TEST=1",
    )
    cluster.kubectl(
        "-n", DRIVER_NAMESPACE, "rollout", "status", "daemonset/localvol-csi-node", "--timeout=300s"
    )
    rolled = cluster.apps.read_namespaced_daemon_set("localvol-csi-node", DRIVER_NAMESPACE)
    assert rolled.metadata.generation > generation
    assert rolled.status.updated_number_scheduled == len(NODES)
    assert views(cluster, ns, names) == held
    assert_unbroken(cluster, ns, names)
    for name in names:
        assert len(lines_written(cluster, ns, name)) > before[name], f"{name} stopped writing"
