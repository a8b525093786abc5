"""Three nodes, each with its own driver and data root: volumes are made on the node their
first pod is scheduled to, and pods follow their data there."""

from __future__ import annotations

import pytest

from tests.e2e.cluster import (
    DRIVER,
    DRIVER_NAMESPACE,
    Cluster,
    claim,
    on_node,
    pod,
    wait_until,
)
from tests.e2e.conftest import CONTROL_PLANE, DATA_ROOT_SIZES, WORKERS
from tests.e2e.host import KIND_DATA

pytestmark = pytest.mark.e2e


def node_of(cluster: Cluster, namespace: str, name: str) -> str:
    return str(cluster.core.read_namespaced_pod(name, namespace).spec.node_name)


def volume_node(cluster: Cluster, namespace: str, claim_name: str) -> str:
    """The node a bound claim's volume is on, as its PersistentVolume says to the scheduler."""
    return cluster.volume_node(namespace, claim_name)


def test_every_node_runs_the_driver_with_its_own_topology(cluster: Cluster) -> None:
    nodes = {n.metadata.name for n in cluster.core.list_node().items}
    assert nodes == {CONTROL_PLANE, *WORKERS}
    pods = cluster.core.list_namespaced_pod(
        DRIVER_NAMESPACE, label_selector="app.kubernetes.io/name=localvol-csi-node"
    ).items
    assert sorted(p.spec.node_name for p in pods) == sorted(nodes)
    storage = cluster.custom.list_cluster_custom_object("storage.k8s.io", "v1", "csinodes")
    keys = {}
    for item in storage["items"]:
        (driver,) = [d for d in item["spec"]["drivers"] if d["name"] == DRIVER]
        keys[item["metadata"]["name"]] = driver["nodeID"]
    # Each node registered under its own name: the key volumes are placed by.
    assert keys == {name: name for name in nodes}


def test_a_volume_is_made_on_its_pods_node_and_its_data_stays_there(
    cluster: Cluster, ns: str
) -> None:
    for index, worker in enumerate(WORKERS):
        cluster.apply(
            ns,
            claim(f"data-{index}", "localvol-ext4", "64Mi"),
            on_node(pod(f"writer-{index}", claims={"/data": f"data-{index}"}), worker),
        )
    for index, worker in enumerate(WORKERS):
        cluster.wait_ready(ns, f"writer-{index}")
        assert volume_node(cluster, ns, f"data-{index}") == worker
        cluster.exec(ns, f"writer-{index}", f"echo from {worker} > /data/note && sync")
        # The volume's image is in that node's data root on the host, nowhere else.
        handle = cluster.volume_handle(ns, f"data-{index}")
        holders = {p.parent.parent.name for p in KIND_DATA.glob(f"*/images/{handle}.img")}
        assert holders == {worker}, f"{handle} found under {sorted(holders)}"


def test_a_pod_follows_its_data_and_waits_while_the_node_is_cordoned(
    cluster: Cluster, ns: str
) -> None:
    cluster.apply(
        ns,
        claim("data", "localvol-ext4", "64Mi"),
        on_node(pod("first", claims={"/data": "data"}), WORKERS[1]),
    )
    cluster.wait_ready(ns, "first")
    cluster.exec(ns, "first", "echo kept > /data/note && sync")
    cluster.delete_pod(ns, "first")
    # No node named this time: the volume decides.
    cluster.apply(ns, pod("second", claims={"/data": "data"}))
    cluster.wait_ready(ns, "second")
    assert node_of(cluster, ns, "second") == WORKERS[1]
    assert cluster.exec(ns, "second", "cat /data/note").strip() == "kept"
    cluster.delete_pod(ns, "second")

    cluster.kubectl("cordon", WORKERS[1])
    try:
        cluster.apply(ns, pod("third", claims={"/data": "data"}))

        reason = wait_until(
            "the pod's FailedScheduling event",
            lambda: failed_scheduling(cluster, ns, "third"),
            timeout=60,
        )
        # The scheduler says why: the volume's node is unschedulable, the other worker is
        # not where the volume is (the control plane is tainted).
        assert "1 node(s) were unschedulable" in reason, reason
        assert "1 node(s) didn't match PersistentVolume's node affinity" in reason, reason
        assert cluster.core.read_namespaced_pod("third", ns).spec.node_name is None
    finally:
        cluster.kubectl("uncordon", WORKERS[1])
    cluster.wait_ready(ns, "third")
    assert node_of(cluster, ns, "third") == WORKERS[1]
    assert cluster.exec(ns, "third", "cat /data/note").strip() == "kept"


def failed_scheduling(cluster: Cluster, namespace: str, pod_name: str) -> str:
    events = cluster.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={pod_name},reason=FailedScheduling"
    ).items
    return " ".join(e.message for e in events)


@pytest.mark.first
@pytest.mark.quiet
def test_claims_land_where_there_is_room_and_wait_where_there_is_none(
    cluster: Cluster, ns: str
) -> None:
    """First of all e2e tests, on data roots as they were made (no other test's volume on
    them, nor one still going away)."""
    assert DATA_ROOT_SIZES[WORKERS[0]] == 8 << 30
    assert DATA_ROOT_SIZES[WORKERS[1]] == 16 << 30
    # Data roots of 8 GiB (worker) and 16 GiB (worker2), a little less of each free for
    # volumes (the filesystem's own): 12 GiB fits on worker2 only.
    cluster.apply(
        ns,
        claim("big", "localvol-ext4", "12Gi"),
        pod("big-user", claims={"/data": "big"}),
    )
    cluster.wait_ready(ns, "big-user")
    assert volume_node(cluster, ns, "big") == WORKERS[1]
    # What worker2 has left (under 3 GiB) is too little for 5 GiB: it goes to worker.
    cluster.apply(
        ns,
        claim("medium", "localvol-ext4", "5Gi"),
        pod("medium-user", claims={"/data": "medium"}),
    )
    cluster.wait_ready(ns, "medium-user")
    assert volume_node(cluster, ns, "medium") == WORKERS[0]
    # Now neither has room for another 5 GiB, and no node ever had room for 64 GiB: both
    # claims wait, and the scheduler says why.
    for name, size in (("another", "5Gi"), ("huge", "64Gi")):
        cluster.apply(
            ns,
            claim(name, "localvol-ext4", size),
            pod(f"{name}-user", claims={"/data": name}),
        )
    for name in ("another", "huge"):
        reason = wait_until(
            f"{name}-user's FailedScheduling event",
            lambda name=name: failed_scheduling(cluster, ns, f"{name}-user"),
            timeout=120,
        )
        assert "did not have enough free storage" in reason, reason
        assert cluster.claim(ns, name).status.phase == "Pending"
        assert cluster.core.read_namespaced_pod(f"{name}-user", ns).spec.node_name is None
    # Room made on worker: the waiting 5 GiB claim gets it.
    cluster.delete_pod(ns, "medium-user")
    cluster.delete(ns, "persistentvolumeclaim", "medium")
    cluster.wait_ready(ns, "another-user", timeout=240)
    assert volume_node(cluster, ns, "another") == WORKERS[0]


def test_a_statefulset_spread_over_the_workers_has_each_volume_on_its_pods_node(
    cluster: Cluster, ns: str
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
    cluster.apply(ns, stateful_set)
    cluster.wait_ready(ns, "web-0", "web-1", timeout=240)
    nodes = {node_of(cluster, ns, f"web-{i}") for i in range(2)}
    assert nodes == set(WORKERS)
    for i in range(2):
        assert volume_node(cluster, ns, f"data-web-{i}") == node_of(cluster, ns, f"web-{i}")
