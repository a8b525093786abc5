"""A clone or a restore whose source is on another node than the one its pod was placed on.

The scheduler places a pod without knowing where its claim's source is. The driver of the
node it picked does not hold the source: it makes nothing, points the claim at the node that
holds it, and says so on the claim. The copy is made there, with the source's data, and the
pod is scheduled there; a pod held to the other node by its spec waits, saying why, until
it is moved. Never an empty volume, never a claim stuck without a reason.
"""

from __future__ import annotations

import pytest

from csi.layout import volume_id_for_name
from tests.e2e.cluster import Cluster, claim, on_node, pod, snapshot, wait_until
from tests.e2e.conftest import WORKERS
from tests.e2e.test_volumes import snapshot_ready

pytestmark = pytest.mark.e2e

SOURCE_NODE, OTHER_NODE = WORKERS
SNAPSHOT_SOURCE = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"}
CLONE_SOURCE = {"kind": "PersistentVolumeClaim", "name": "source"}
TIMEOUT = 300.0


def events(cluster: Cluster, ns: str, kind: str, name: str) -> list[str]:
    found = cluster.core.list_namespaced_event(
        ns, field_selector=f"involvedObject.kind={kind},involvedObject.name={name}"
    )
    return [e.message or "" for e in found.items]


def claim_events(cluster: Cluster, ns: str, name: str) -> list[str]:
    return events(cluster, ns, "PersistentVolumeClaim", name)


def copy_of(name: str, source: dict[str, str]) -> dict[str, object]:
    return claim(name, "localvol-ext4", "64Mi", dataSource=source)


def test_a_copy_is_made_on_its_sources_node_and_never_elsewhere(cluster: Cluster, ns: str) -> None:
    cluster.apply(
        ns,
        claim("source", "localvol-ext4", "64Mi"),
        on_node(pod("source", claims={"/data": "source"}), SOURCE_NODE),
    )
    cluster.wait_ready(ns, "source")
    cluster.exec(ns, "source", "echo original > /data/file && sync")
    cluster.apply(ns, snapshot("snap", "source"))
    wait_until("the snapshot ready", lambda: snapshot_ready(cluster, ns, "snap"), TIMEOUT)

    # Pods held to the other worker: each claim says where its source is and is made there;
    # nothing is made on the other worker, and the pods wait, saying why.
    for name, source in (("clone", CLONE_SOURCE), ("restore", SNAPSHOT_SOURCE)):
        user = on_node(pod(f"{name}-user", claims={"/data": name}), OTHER_NODE)
        cluster.apply(ns, copy_of(name, source), user)
    for name in ("clone", "restore"):
        message = wait_until(
            f"{name}'s event naming the source's node",
            lambda name=name: next(
                (m for m in claim_events(cluster, ns, name) if "not on this node" in m), ""
            ),
            TIMEOUT,
            poll=2.0,
        )
        assert f"is on node {SOURCE_NODE}, not on this node ({OTHER_NODE})" in message
        assert f"the claim now names {SOURCE_NODE} as its node" in message
        wait_until(
            f"{name} bound", lambda name=name: cluster.claim(ns, name).status.phase == "Bound"
        )
        assert cluster.volume_node(ns, name) == SOURCE_NODE
        volume_id = volume_id_for_name(f"pvc-{cluster.claim(ns, name).metadata.uid}")
        other = cluster.data_roots[OTHER_NODE]
        assert not (other / "images" / f"{volume_id}.img").exists()
        assert not (other / "state" / "volumes" / f"{volume_id}.json").exists()
        reason = wait_until(
            f"{name}-user's reason for waiting",
            lambda name=name: " ".join(
                m for m in events(cluster, ns, "Pod", f"{name}-user") if "affinity" in m
            ),
            TIMEOUT,
            poll=2.0,
        )
        assert "didn't match PersistentVolume's node affinity" in reason, reason
        assert cluster.core.read_namespaced_pod(f"{name}-user", ns).spec.node_name is None

    # Moved to the source's node, as the message says: they run there with the copies.
    for name in ("clone", "restore"):
        cluster.delete_pod(ns, f"{name}-user")
        cluster.apply(ns, on_node(pod(f"{name}-user", claims={"/data": name}), SOURCE_NODE))
    cluster.wait_ready(ns, "clone-user", "restore-user", timeout=TIMEOUT)
    for name in ("clone", "restore"):
        assert cluster.volume_node(ns, name) == SOURCE_NODE
        assert cluster.exec(ns, f"{name}-user", "cat /data/file") == "original\n"


def test_a_pod_free_to_go_anywhere_ends_on_its_sources_node(
    cluster: Cluster, ns: str, report: list[str]
) -> None:
    """If the scheduler picks the other worker first, the claim is pointed at the source's
    node and the pod's next try goes there: it runs with the copy's data."""
    cluster.apply(
        ns,
        claim("source", "localvol-ext4", "64Mi"),
        on_node(pod("source", claims={"/data": "source"}), SOURCE_NODE),
    )
    cluster.wait_ready(ns, "source")
    cluster.exec(ns, "source", "echo original > /data/file && sync")
    cluster.apply(ns, copy_of("clone", CLONE_SOURCE), pod("anywhere", claims={"/data": "clone"}))
    cluster.wait_ready(ns, "anywhere", timeout=TIMEOUT)
    assert cluster.volume_node(ns, "clone") == SOURCE_NODE
    assert cluster.exec(ns, "anywhere", "cat /data/file") == "original\n"
    tries = [m for m in claim_events(cluster, ns, "clone") if "not on this node" in m]
    report.append(
        f"clone, source on another node: the scheduler chose the wrong worker {len(tries)}x first"
    )
