"""The driver restarted on one node, then rolled over every node, while ext4 and directory
volumes are in use on all three: each node's driver keeps to its own loop devices and mounts
(all nodes share the host's kernel and loop devices), and no write of a pod is lost."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from csi.host import loopdev
from csi.host.loopdev import FileId
from tests.e2e.cluster import DRIVER_NAMESPACE, Cluster, claim, pod, wait_until
from tests.kind.conftest import CONTROL_PLANE, WORKERS
from tests.kind.host import KIND_DATA, REPO

pytestmark = pytest.mark.kind

NODES = (CONTROL_PLANE, *WORKERS)
DRIVER_PODS = "app.kubernetes.io/name=localvol-csi-node"
# One pod per node and class, each appending a numbered line every 0.2 s. (An xfs volume is
# 300 MiB at least, more than the smallest node's data root here holds.)
CLASSES = ("localvol-ext4", "localvol-directory")
WRITER = "i=0; while true; do i=$((i+1)); echo $i >> /data/log; sync /data/log; sleep 0.2; done"


def node_pid(node: str) -> int:
    """The node container's first process, as this host sees it."""
    out = subprocess.run(
        [str(REPO / "hack" / "kind-podman"), "inspect", "--format", "{{.State.Pid}}", node],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out)


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
        if "/kubernetes.io~csi/" in point and any(f"/{pv}/" in point for pv in volumes.pvs)
    )
    images = {
        FileId.of(image): image.name
        for image in (KIND_DATA / node.removeprefix("localvol-") / "images").glob("*.img")
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
        for storage_class in CLASSES:
            name = f"{node.removeprefix('localvol-')}-{storage_class.removeprefix('localvol-')}"
            spec: dict[str, Any] = pod(name, WRITER, claims={"/data": name})
            spec["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
            spec["spec"]["tolerations"] = [{"operator": "Exists"}]
            cluster.apply(namespace, claim(name, storage_class, "48Mi"), spec)
            names.append(name)
    cluster.wait_ready(namespace, *names, timeout=300)
    return names


def lines_written(cluster: Cluster, namespace: str, name: str) -> list[int]:
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
    kind: Cluster, kind_ns: str
) -> None:
    names = writers_on_every_node(kind, kind_ns)
    before = views(kind, kind_ns, names)
    for node in NODES:
        mounts, loops = before[node]
        assert len(mounts) == len(CLASSES), (node, sorted(mounts))
        assert len(loops) == 1, (node, sorted(loops))  # the ext4 volume's
    for node in NODES:
        old = driver_pod_on(kind, node)
        kind.delete_pod(DRIVER_NAMESPACE, old)
        wait_until(
            f"a new driver pod on {node}",
            lambda n=node, o=old: driver_pod_on(kind, n) not in ("", o),
        )
        kind.wait_ready(DRIVER_NAMESPACE, driver_pod_on(kind, node))
        # Every node's volumes as they were: the restarted driver reconciled its own and
        # touched no other node's (same mounts, same loop devices on the same images).
        assert views(kind, kind_ns, names) == before
    assert_unbroken(kind, kind_ns, names)


def test_a_rolling_update_of_the_driver_loses_no_write(kind: Cluster, kind_ns: str) -> None:
    names = writers_on_every_node(kind, kind_ns)
    held = views(kind, kind_ns, names)
    before = {name: len(lines_written(kind, kind_ns, name)) for name in names}
    daemonset = kind.apps.read_namespaced_daemon_set("localvol-csi-node", DRIVER_NAMESPACE)
    generation = daemonset.metadata.generation
    # A new argument in the pod template: the DaemonSet rolls its pods one node at a time.
    kind.kubectl(
        "-n",
        DRIVER_NAMESPACE,
        "set",
        "env",
        "daemonset/localvol-csi-node",
        "-c",
        "driver",
        "LOCALVOL_ROLLOUT_TEST=1",
    )
    kind.kubectl(
        "-n", DRIVER_NAMESPACE, "rollout", "status", "daemonset/localvol-csi-node", "--timeout=300s"
    )
    rolled = kind.apps.read_namespaced_daemon_set("localvol-csi-node", DRIVER_NAMESPACE)
    assert rolled.metadata.generation > generation
    assert rolled.status.updated_number_scheduled == len(NODES)
    assert views(kind, kind_ns, names) == held
    assert_unbroken(kind, kind_ns, names)
    for name in names:
        assert len(lines_written(kind, kind_ns, name)) > before[name], f"{name} stopped writing"
