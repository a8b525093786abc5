"""A StorageClass made while the cluster runs serves its first pod at once.

The node's provisioner publishes a CSIStorageCapacity per class; until a class has one the
scheduler finds no node with room for its claims ("did not have enough free storage"). This
is the user's promise, bounded; hack/new-class-latency measures the medians, quiet and on a
busy node (docs/PERFORMANCE.md)."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.e2e.cluster import Cluster, claim, pod, storage_class

pytestmark = [pytest.mark.e2e, pytest.mark.quiet]

# Seconds from creating a class to a Running pod on it: a pod with a claim takes ~2 s here
# (tests/e2e/test_timings.py), the capacity object well under a second.
BOUND = 20.0
TIMEOUT = 180.0


def test_a_new_class_serves_a_pod_within_the_bound(cluster: Cluster, ns: str) -> None:
    """Class, claim and pod applied together, as a user's manifest does."""
    name = f"e2e-new-{uuid.uuid4().hex[:6]}"
    parameters = {"volumeType": "loop", "csi.storage.k8s.io/fstype": "ext4"}
    start = time.monotonic()
    cluster.apply(
        ns,
        storage_class(name, parameters),
        claim(name, name, "16Mi"),
        pod(name, claims={"/data": name}),
    )
    published = running = 0.0
    try:
        while time.monotonic() - start < TIMEOUT and not (published and running):
            if not published and cluster.published_capacity(name):
                published = time.monotonic() - start
            if not running and cluster.core.read_namespaced_pod(name, ns).status.phase == "Running":
                running = time.monotonic() - start
            time.sleep(0.05)
    finally:
        cluster.kubectl("delete", "-n", ns, "pod", name, "--wait=true")
        cluster.kubectl("delete", "-n", ns, "pvc", name, "--wait=true")
        cluster.kubectl("delete", "storageclass", name)
    assert published, f"class {name}: no CSIStorageCapacity within {TIMEOUT:.0f} s"
    assert running, f"class {name}: pod not Running within {TIMEOUT:.0f} s"
    assert running <= BOUND, (
        f"a new class's first pod ran after {running:.1f}s (capacity after {published:.1f}s)"
    )
