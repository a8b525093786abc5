"""CSI 1.13 volume health in pod status: with the kubelet's and the API server's
CSIVolumeHealth feature gate on (deploy/kind/cluster.yaml), a loop volume broken under a
running pod shows its condition in ``pod.status.volumeHealth``, and the condition goes away
once the cause is removed. The kubelet asks NodeGetVolumeHealth once per volumeStatsAggPeriod:
a minute by default, 10 s in deploy/kind/cluster.yaml."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, claim, pod, wait_until

pytestmark = pytest.mark.e2e

# Two probe rounds of a kubelet at the default period, and the status update after them.
PROBE_TIMEOUT = 240.0
POLL = 2.0


def volume_health(cluster: Cluster, ns: str, pod_name: str) -> list[dict[str, Any]]:
    """The pod's ``status.volumeHealth`` as the API server returns it (raw JSON: the
    client's models may predate the field)."""
    raw = cluster.kubectl("-n", ns, "get", "pod", pod_name, "-o", "jsonpath={.status.volumeHealth}")
    found: list[dict[str, Any]] = json.loads(raw) if raw.strip() else []
    return found


def conditions_of(cluster: Cluster, ns: str, pod_name: str, volume: str) -> set[tuple[str, str]]:
    for entry in volume_health(cluster, ns, pod_name):
        if entry.get("name") == volume:
            return {(c["status"], c["reason"]) for c in entry.get("healthConditions") or []}
    return set()


def test_broken_loop_volume_shows_in_pod_status(cluster: Cluster, ns: str) -> None:
    cluster.apply(ns, claim("data", "localvol-ext4"), pod("app", claims={"/data": "data"}))
    cluster.wait_ready(ns, "app")
    cluster.exec(ns, "app", "echo before > /data/file && sync")
    volume = next(
        v["name"]
        for v in cluster.core.read_namespaced_pod("app", ns).to_dict()["spec"]["volumes"]
        if (v.get("persistent_volume_claim") or {}).get("claim_name") == "data"
    )
    assert conditions_of(cluster, ns, "app", volume) == set()

    # Break it: the image file disappears from the data root (the mounted loop device
    # keeps the pod running, as a lost image would until the next stage).
    image = cluster.image_of(ns, "data")
    hidden = Path(f"{image}.hidden-by-e2e")
    os.rename(image, hidden)
    try:
        wait_until(
            "the condition in pod.status.volumeHealth",
            lambda: ("DataLoss", "VolumeDataMissing") in conditions_of(cluster, ns, "app", volume),
            PROBE_TIMEOUT,
            poll=POLL,
        )
        (entry,) = [e for e in volume_health(cluster, ns, "app") if e["name"] == volume]
        (condition,) = entry["healthConditions"]
        assert "missing" in condition.get("message", "")
    finally:
        os.rename(hidden, image)

    wait_until(
        "the condition gone from pod.status.volumeHealth",
        lambda: conditions_of(cluster, ns, "app", volume) == set(),
        PROBE_TIMEOUT,
        poll=POLL,
    )
    assert cluster.exec(ns, "app", "cat /data/file") == "before\n"
