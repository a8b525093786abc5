"""Last of the kind tier: hack/kind-down leaves the host as it was before hack/kind-up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.cluster import E2E_LABEL, Cluster, wait_until
from tests.kind.conftest import BEFORE, KEEP, remove_disks
from tests.kind.host import KIND_DATA, KIND_RUN, REPO, HostState

pytestmark = pytest.mark.kind


@pytest.mark.skipif(KEEP, reason="LOCALVOL_KIND_KEEP: the cluster stays up")
def test_kind_down_leaves_the_host_as_it_was(
    request: pytest.FixtureRequest, kind: Cluster, kind_env: dict[str, str], tmp_path: Path
) -> None:
    # The tests' namespaces (and so their volumes) go first, as a user would clean up.
    wait_until(
        "the tests' namespaces deleted",
        lambda: not kind.core.list_namespace(label_selector=E2E_LABEL).items,
        timeout=300,
    )
    proc = subprocess.run([str(REPO / "hack" / "kind-down")], env=kind_env, check=False)
    assert proc.returncode == 0, "hack/kind-down failed (its output is above)"
    remove_disks()
    assert not KIND_DATA.exists()
    assert not KIND_RUN.exists()
    left = HostState.read().differences(request.config.stash[BEFORE], tmp_path / "sysctl")
    assert left == [], "\n".join(left)
