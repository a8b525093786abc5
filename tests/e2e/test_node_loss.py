"""A worker lost: its container stopped and its Node object deleted, as when a machine dies
and an operator removes it. The other worker's volumes go on serving; the lost node's
claims stay where their data is, and their pods wait with the scheduler's reason. Then the
README's two ways out (deploy/README.md, "The kind cluster is the test cluster"): give a
claim's data up (its claim and pod deleted, the StatefulSet makes both again on a node that
exists), or bring the node back (its container started: the kubelet registers the node
again and the driver serves its volumes, data intact).

Last before the teardown check: for a while the cluster has one worker."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.cluster import Cluster, claim, on_node, pod, wait_until
from tests.e2e.conftest import WORKERS
from tests.e2e.host import engine

pytestmark = [pytest.mark.e2e, pytest.mark.disruptive, pytest.mark.last]

SURVIVOR, LOST = WORKERS
TIMEOUT = 300.0


def stateful_set(name: str) -> dict[str, Any]:
    """One replica whose claim ``data-<name>-0`` the test made beforehand on the lost node."""
    spec = pod(name, claims={"/data": f"data-{name}-0"})["spec"]
    spec["volumes"] = []
    spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
            "volumeClaimTemplates": [claim("data", "localvol-ext4", "64Mi")],
        },
    }


def node_ready(cluster: Cluster, node: str) -> bool:
    try:
        conditions = cluster.core.read_node(node).status.conditions or []
    except Exception:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def scheduling_reason(cluster: Cluster, ns: str, name: str) -> str:
    events = cluster.core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name},reason=FailedScheduling"
    ).items
    return " ".join(e.message or "" for e in events)


def test_a_lost_worker_leaves_the_other_serving_and_its_volumes_waiting(
    cluster: Cluster, ns: str
) -> None:
    # On the lost-to-be worker: two StatefulSets' claims, each with data written.
    for name in ("kept", "given-up"):
        data = f"data-{name}-0"
        cluster.apply(
            ns,
            claim(data, "localvol-ext4", "64Mi"),
            on_node(pod(f"{name}-seed", claims={"/data": data}), LOST),
        )
        cluster.wait_ready(ns, f"{name}-seed")
        cluster.exec(ns, f"{name}-seed", f"echo {name} > /data/file && sync")
        cluster.delete_pod(ns, f"{name}-seed")
        cluster.apply(ns, stateful_set(name))
        cluster.wait_ready(ns, f"{name}-0")
        assert cluster.volume_node(ns, data) == LOST
    # On the other worker, a pod with its own volume.
    cluster.apply(
        ns,
        claim("survivor", "localvol-ext4", "64Mi"),
        on_node(pod("survivor", claims={"/data": "survivor"}), SURVIVOR),
    )
    cluster.wait_ready(ns, "survivor")
    cluster.exec(ns, "survivor", "echo survivor > /data/file && sync")

    engine("stop", LOST)
    cluster.kubectl("delete", "node", LOST)

    # The lost node's pods are made again and wait, saying why; nothing moves them.
    for name in ("kept", "given-up"):
        reason = wait_until(
            f"{name}-0 waiting for its volume's node",
            lambda name=name: scheduling_reason(cluster, ns, f"{name}-0"),
            TIMEOUT,
            poll=2.0,
        )
        assert "didn't match PersistentVolume's node affinity" in reason, reason
        assert cluster.claim(ns, f"data-{name}-0").status.phase == "Bound"
    # The other worker serves on: its pod, its data, and a new volume.
    assert cluster.pod_ready(ns, "survivor")
    assert cluster.exec(ns, "survivor", "cat /data/file") == "survivor\n"
    cluster.apply(
        ns,
        claim("new", "localvol-ext4", "64Mi"),
        pod("new", claims={"/data": "new"}),
    )
    cluster.wait_ready(ns, "new", timeout=TIMEOUT)
    assert cluster.volume_node(ns, "new") == SURVIVOR

    # Give the data up: the claim deleted (its waiting pod does not hold it), then the pod;
    # the StatefulSet makes both again, on the node that is left, empty.
    cluster.kubectl("-n", ns, "delete", "pvc", "data-given-up-0", "--wait=true")
    old = cluster.core.read_namespaced_pod("given-up-0", ns).metadata.uid
    cluster.kubectl("-n", ns, "delete", "pod", "given-up-0", "--wait=true")
    wait_until(
        "given-up-0 made again",
        lambda: (
            old not in {p.metadata.uid for p in cluster.core.list_namespaced_pod(ns).items}
            and any(
                p.metadata.name == "given-up-0" for p in cluster.core.list_namespaced_pod(ns).items
            )
        ),
    )
    cluster.wait_ready(ns, "given-up-0", timeout=TIMEOUT)
    assert cluster.volume_node(ns, "data-given-up-0") == SURVIVOR
    assert cluster.exec(ns, "given-up-0", "cat /data/file 2>/dev/null || echo empty") == "empty\n"

    # Bring the node back: it registers again and its pod runs there, its data intact.
    engine("start", LOST)
    wait_until(f"{LOST} registered and Ready again", lambda: node_ready(cluster, LOST), TIMEOUT)
    cluster.wait_ready(ns, "kept-0", timeout=TIMEOUT)
    assert cluster.core.read_namespaced_pod("kept-0", ns).spec.node_name == LOST
    assert cluster.exec(ns, "kept-0", "cat /data/file") == "kept\n"
