"""How long a user waits for a pod with storage, beside one without: reported in the
summary, never asserted (a timed assertion only measures the machine). Five interleaved
rounds: the figure is a sign; hack/claim-timeline takes one claim apart interval by
interval."""

from __future__ import annotations

import statistics
import time

import pytest

from tests.e2e.cluster import Cluster, claim, pod, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.quiet]

ROUNDS = 5


def time_to_running(cluster: Cluster, ns: str, name: str, storage_class: str | None) -> float:
    documents = [pod(name, claims={"/data": name} if storage_class else None)]
    if storage_class:
        documents.insert(0, claim(name, storage_class))
    start = time.monotonic()
    cluster.apply(ns, *documents)
    wait_until(
        f"pod {name} Running",
        lambda: cluster.core.read_namespaced_pod(name, ns).status.phase == "Running",
        poll=0.05,
    )
    return time.monotonic() - start


def test_claim_to_running(cluster: Cluster, ns: str, report: list[str]) -> None:
    kinds = {"no volume": None, "directory": "localvol-directory", "loop ext4": "localvol-ext4"}
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    # Interleaved rounds, so a slow moment of the machine falls on every kind alike.
    for index in range(ROUNDS):
        for kind, storage_class in kinds.items():
            name = f"{kind.split()[-1]}-{index}"
            seconds[kind].append(time_to_running(cluster, ns, name, storage_class))
    floor = statistics.median(seconds["no volume"])
    report.append(f"create to Running, median of {ROUNDS} (one node, interleaved rounds):")
    for kind, values in seconds.items():
        median = statistics.median(values)
        report.append(
            f"  {kind:10} median {median:.2f}s  min {min(values):.2f}s  max {max(values):.2f}s"
            f"  ratio to no volume {median / floor:.2f}"
        )
    assert all(len(v) == ROUNDS for v in seconds.values())
