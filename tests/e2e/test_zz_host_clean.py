"""Last: hack/cluster-down leaves the host as it found it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e import host
from tests.e2e.cluster import CLUSTER_DIR, CLUSTER_RUN, E2E_LABEL, REPO, Cluster, wait_until
from tests.e2e.conftest import KEEP
from tests.e2e.test_storage_suite import SUITE_LABEL

pytestmark = [pytest.mark.e2e, pytest.mark.last]
HOST_TOOL = REPO / "hack" / "cluster-host"


@pytest.mark.skipif(KEEP, reason="LOCALVOL_E2E_KEEP: the cluster stays up")
def test_cluster_down_leaves_nothing(cluster: Cluster, tmp_path: Path) -> None:
    # Every test's namespace (and so its volumes) is gone first: a user deletes what they
    # made before they take a cluster down.
    wait_until(
        "the tests' namespaces deleted (the storage suite's too)",
        lambda: (
            not any(
                cluster.core.list_namespace(label_selector=label).items
                for label in (E2E_LABEL, SUITE_LABEL)
            )
        ),
        timeout=600,
    )
    baseline = tmp_path / "baseline"
    shutil.copytree(CLUSTER_DIR / "baseline", baseline)
    pids = host.cluster_pids()
    assert pids, "no cluster process recorded"
    proc = subprocess.run([str(REPO / "hack" / "cluster-down")], check=False)
    assert proc.returncode == 0, "hack/cluster-down failed (its output is above)"
    assert host.alive(pids) == []
    assert host.cluster_mounts() == []
    assert host.cluster_loop_devices() == []
    assert not CLUSTER_DIR.exists()
    assert not CLUSTER_RUN.exists()
    assert (
        not Path("/var/lib/kubelet").exists()
        or "/var/lib/kubelet" in (baseline / "existing-paths").read_text().split()
    )
    assert subprocess.run(["ip", "link", "show", "lvcl0"], capture_output=True).returncode != 0
    diff = subprocess.run(
        [
            sys.executable,
            str(REPO / "hack" / "cluster-host"),
            "sysctl-diff",
            str(baseline / "sysctl"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert diff.returncode == 0, f"sysctls changed:\n{diff.stdout}"
    before = set()
    for file, family in (
        (baseline / "iptables", "iptables"),
        (baseline / "ip6tables", "ip6tables"),
    ):
        table = ""
        for line in file.read_text().splitlines() if file.exists() else []:
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                before.add(f"{family}:{table}:{line[1:].split()[0]}")
    assert host.iptables_chains() == before
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    # The same tables, in any order: nft lists them in creation order, and a table the
    # iptables-nft tools made again (the host's own `ip filter`, say) moves to the end.
    assert set(tables.splitlines()) == set((baseline / "nft-tables").read_text().splitlines())
    assert not any(Path("/sys/fs/cgroup").glob("*/localvol-cluster"))
