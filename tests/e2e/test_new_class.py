"""A StorageClass made while the cluster runs serves its first pod at once.

The node's provisioner publishes a CSIStorageCapacity per class; until a class has one the
scheduler finds no node with room for its claims ("did not have enough free storage"). The
bounded test is the user's promise; the timing test reports the medians (never asserted)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.e2e.cluster import DRIVER_NAMESPACE, Cluster, claim, pod

pytestmark = pytest.mark.e2e

DRIVER = "localvol.csi.dev"
# Seconds from creating a class to a Running pod on it: a pod with a claim takes ~2 s here
# (tests/e2e/test_timings.py), the capacity object well under a second.
BOUND = 20.0


def storage_class(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": DRIVER,
        "parameters": {"volumeType": "loop", "csi.storage.k8s.io/fstype": "ext4"},
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    }


def capacity_published(cluster: Cluster, class_name: str) -> bool:
    objects = cluster.kubectl(
        "get",
        "csistoragecapacities",
        "-n",
        DRIVER_NAMESPACE,
        "-o",
        "jsonpath={.items[*].storageClassName}",
    )
    return class_name in objects.split()


def new_class_timings(cluster: Cluster, ns: str, index: int) -> tuple[float, float]:
    """Seconds from creating a class to its CSIStorageCapacity, and to a Running pod with
    a claim of it (claim and pod created with the class, as a user's manifest does)."""
    name = f"e2e-new-{uuid.uuid4().hex[:6]}-{index}"
    start = time.monotonic()
    cluster.apply(
        ns, storage_class(name), claim(name, name, "16Mi"), pod(name, claims={"/data": name})
    )
    published = running = 0.0
    deadline = start + 180
    try:
        while time.monotonic() < deadline and not (published and running):
            if not published and capacity_published(cluster, name):
                published = time.monotonic() - start
            if not running and cluster.core.read_namespaced_pod(name, ns).status.phase == "Running":
                running = time.monotonic() - start
            time.sleep(0.05)
        assert published, f"class {name}: no CSIStorageCapacity within 180 s"
        assert running, f"class {name}: pod not Running within 180 s"
        return published, running
    finally:
        cluster.kubectl("delete", "-n", ns, "pod", name, "--wait=true")
        cluster.kubectl("delete", "-n", ns, "pvc", name, "--wait=true")
        cluster.kubectl("delete", "storageclass", name)


def test_a_new_class_serves_a_pod_within_the_bound(cluster: Cluster, ns: str) -> None:
    published, running = new_class_timings(cluster, ns, 0)
    assert running <= BOUND, (
        f"a new class's first pod ran after {running:.1f}s (capacity after {published:.1f}s)"
    )
