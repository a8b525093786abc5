"""Three nodes, each with its own driver and data root: volumes are made on the node their
first pod is scheduled to, and pods follow their data there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import DRIVER, DRIVER_NAMESPACE, Cluster, claim, pod, wait_until
from tests.kind.conftest import CONTROL_PLANE, WORKERS
from tests.kind.host import KIND_DATA

pytestmark = pytest.mark.kind


def data_root(node: str) -> Path:
    """The node's data root on the host (deploy/kind/cluster.yaml: one per node, named for
    its role: control-plane, worker, worker2)."""
    return KIND_DATA / node.removeprefix("localvol-")


def on_node(document: dict[str, Any], node: str) -> dict[str, Any]:
    document["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    return document


def node_of(cluster: Cluster, namespace: str, name: str) -> str:
    return str(cluster.core.read_namespaced_pod(name, namespace).spec.node_name)


def volume_node(cluster: Cluster, namespace: str, claim_name: str) -> str:
    """The node a bound claim's volume is on, as its PersistentVolume says to the scheduler."""
    volume = cluster.claim(namespace, claim_name).spec.volume_name
    pv = cluster.core.read_persistent_volume(volume)
    terms = pv.spec.node_affinity.required.node_selector_terms
    (value,) = {v for t in terms for e in t.match_expressions for v in e.values}
    return str(value)


def test_every_node_runs_the_driver_with_its_own_topology(kind: Cluster) -> None:
    nodes = {n.metadata.name for n in kind.core.list_node().items}
    assert nodes == {CONTROL_PLANE, *WORKERS}
    pods = kind.core.list_namespaced_pod(
        DRIVER_NAMESPACE, label_selector="app.kubernetes.io/name=localvol-csi-node"
    ).items
    assert sorted(p.spec.node_name for p in pods) == sorted(nodes)
    storage = kind.custom.list_cluster_custom_object("storage.k8s.io", "v1", "csinodes")
    keys = {}
    for item in storage["items"]:
        (driver,) = [d for d in item["spec"]["drivers"] if d["name"] == DRIVER]
        keys[item["metadata"]["name"]] = driver["nodeID"]
    # Each node registered under its own name: the key volumes are placed by.
    assert keys == {name: name for name in nodes}


def test_a_volume_is_made_on_its_pods_node_and_its_data_stays_there(
    kind: Cluster, kind_ns: str
) -> None:
    for index, worker in enumerate(WORKERS):
        kind.apply(
            kind_ns,
            claim(f"data-{index}", "localvol-ext4", "64Mi"),
            on_node(pod(f"writer-{index}", claims={"/data": f"data-{index}"}), worker),
        )
    for index, worker in enumerate(WORKERS):
        kind.wait_ready(kind_ns, f"writer-{index}")
        assert volume_node(kind, kind_ns, f"data-{index}") == worker
        kind.exec(kind_ns, f"writer-{index}", f"echo from {worker} > /data/note && sync")
        # The volume's image is in that node's data root on the host, nowhere else.
        handle = kind.volume_handle(kind_ns, f"data-{index}")
        holders = {p.parent.parent.name for p in KIND_DATA.glob(f"*/images/{handle}.img")}
        assert holders == {data_root(worker).name}, f"{handle} found under {sorted(holders)}"


def test_a_pod_follows_its_data_and_waits_while_the_node_is_cordoned(
    kind: Cluster, kind_ns: str
) -> None:
    kind.apply(
        kind_ns,
        claim("data", "localvol-ext4", "64Mi"),
        on_node(pod("first", claims={"/data": "data"}), WORKERS[1]),
    )
    kind.wait_ready(kind_ns, "first")
    kind.exec(kind_ns, "first", "echo kept > /data/note && sync")
    kind.delete_pod(kind_ns, "first")
    # No node named this time: the volume decides.
    kind.apply(kind_ns, pod("second", claims={"/data": "data"}))
    kind.wait_ready(kind_ns, "second")
    assert node_of(kind, kind_ns, "second") == WORKERS[1]
    assert kind.exec(kind_ns, "second", "cat /data/note").strip() == "kept"
    kind.delete_pod(kind_ns, "second")

    kind.kubectl("cordon", WORKERS[1])
    try:
        kind.apply(kind_ns, pod("third", claims={"/data": "data"}))

        reason = wait_until(
            "the pod's FailedScheduling event",
            lambda: failed_scheduling(kind, kind_ns, "third"),
            timeout=60,
        )
        # The scheduler says why: the volume's node is unschedulable, the other worker is
        # not where the volume is (the control plane is tainted).
        assert "1 node(s) were unschedulable" in reason, reason
        assert "1 node(s) didn't match PersistentVolume's node affinity" in reason, reason
        assert kind.core.read_namespaced_pod("third", kind_ns).spec.node_name is None
    finally:
        kind.kubectl("uncordon", WORKERS[1])
    kind.wait_ready(kind_ns, "third")
    assert node_of(kind, kind_ns, "third") == WORKERS[1]
    assert kind.exec(kind_ns, "third", "cat /data/note").strip() == "kept"


def failed_scheduling(cluster: Cluster, namespace: str, pod_name: str) -> str:
    events = cluster.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={pod_name},reason=FailedScheduling"
    ).items
    return " ".join(e.message for e in events)


def test_claims_land_where_there_is_room_and_wait_where_there_is_none(
    kind: Cluster, kind_ns: str
) -> None:
    # Data roots of 384 MiB (worker) and 768 MiB (worker2): 500 MiB fits on worker2 only.
    kind.apply(
        kind_ns,
        claim("big", "localvol-ext4", "500Mi"),
        pod("big-user", claims={"/data": "big"}),
    )
    kind.wait_ready(kind_ns, "big-user")
    assert volume_node(kind, kind_ns, "big") == WORKERS[1]
    # What worker2 has left is too little for 300 MiB: it goes to worker.
    kind.apply(
        kind_ns,
        claim("medium", "localvol-ext4", "300Mi"),
        pod("medium-user", claims={"/data": "medium"}),
    )
    kind.wait_ready(kind_ns, "medium-user")
    assert volume_node(kind, kind_ns, "medium") == WORKERS[0]
    # Now neither has room for another 300 MiB, and no node ever had room for 2 GiB: both
    # claims wait, and the scheduler says why.
    for name, size in (("another", "300Mi"), ("huge", "2Gi")):
        kind.apply(
            kind_ns,
            claim(name, "localvol-ext4", size),
            pod(f"{name}-user", claims={"/data": name}),
        )
    for name in ("another", "huge"):
        reason = wait_until(
            f"{name}-user's FailedScheduling event",
            lambda name=name: failed_scheduling(kind, kind_ns, f"{name}-user"),
            timeout=120,
        )
        assert "did not have enough free storage" in reason, reason
        assert kind.claim(kind_ns, name).status.phase == "Pending"
        assert kind.core.read_namespaced_pod(f"{name}-user", kind_ns).spec.node_name is None
    # Room made on worker: the waiting 300 MiB claim gets it.
    kind.delete_pod(kind_ns, "medium-user")
    kind.delete(kind_ns, "persistentvolumeclaim", "medium")
    kind.wait_ready(kind_ns, "another-user", timeout=240)
    assert volume_node(kind, kind_ns, "another") == WORKERS[0]


def test_a_statefulset_spread_over_the_workers_has_each_volume_on_its_pods_node(
    kind: Cluster, kind_ns: str
) -> None:
    spec = pod("web")["spec"]
    spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    spec["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}},
        }
    ]
    stateful_set = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "serviceName": "web",
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": spec},
            "volumeClaimTemplates": [claim("data", "localvol-directory", "16Mi")],
        },
    }
    kind.apply(kind_ns, stateful_set)
    kind.wait_ready(kind_ns, "web-0", "web-1", timeout=240)
    nodes = {node_of(kind, kind_ns, f"web-{i}") for i in range(2)}
    assert nodes == set(WORKERS)
    for i in range(2):
        assert volume_node(kind, kind_ns, f"data-web-{i}") == node_of(kind, kind_ns, f"web-{i}")
