"""Last: hack/kind-down leaves the host as it was before hack/kind-up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.cluster import E2E_LABEL, REPO, Cluster, wait_until
from tests.e2e.conftest import AFTER_TIERS, BEFORE, KEEP, remove_disks
from tests.e2e.host import KIND_DATA, KIND_RUN, HostState
from tests.e2e.test_storage_suite import SUITE_LABEL

pytestmark = [pytest.mark.e2e, pytest.mark.last]


@pytest.mark.skipif(KEEP, reason="LOCALVOL_E2E_KEEP: the cluster stays up")
def test_kind_down_leaves_the_host_as_it_was(
    request: pytest.FixtureRequest, cluster: Cluster, kind_env: dict[str, str], tmp_path: Path
) -> None:
    # Every test's namespace (and so its volumes) is gone first, the storage suite's too: a
    # user deletes what they made before they take a cluster down.
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
    proc = subprocess.run([str(REPO / "hack" / "kind-down")], env=kind_env, check=False)
    assert proc.returncode == 0, "hack/kind-down failed (its output is above)"
    remove_disks()
    assert not KIND_DATA.exists()
    assert not KIND_RUN.exists()
    # The cluster is down before this waits: the other tiers have the whole machine for the
    # rest of their run. The host is read once they are done (none of their loop devices or
    # mounts in the reading).
    if AFTER_TIERS:
        wait_until(
            "the other tiers, run beside this one, done (the host is read without them)",
            lambda: Path(AFTER_TIERS).exists(),
            timeout=3600,
        )
    left = HostState.read().differences(request.config.stash[BEFORE], tmp_path / "sysctl")
    assert left == [], "\n".join(left)
