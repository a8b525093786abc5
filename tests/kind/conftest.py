"""Kind tier: the cluster of deploy/kind/cluster.yaml (one control plane, two workers) as a
user starts it, hack/kind-up then hack/kind-install; where no Docker engine answers (this
machine), on a Podman of the project's own with a node image built here. The first test that
needs it brings it up; the last (test_zz_kind_down) takes it down with hack/kind-down and
checks that the host is as it was before.

Set LOCALVOL_KIND_KEEP=1 to leave the cluster running afterwards (never under CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster
from tests.kind.host import KIND_DATA, REPO, HostState
from tests.support.prerequisites import IN_CI, need, need_root

KEEP = os.environ.get("LOCALVOL_KIND_KEEP", "") not in ("", "0")
CONTEXT = "kind-localvol"
WORKERS = ("localvol-worker", "localvol-worker2")
CONTROL_PLANE = "localvol-control-plane"
BEFORE = pytest.StashKey[HostState]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kind: needs the three-node kind cluster")


def pytest_sessionstart(session: pytest.Session) -> None:
    if KEEP and IN_CI:
        raise pytest.UsageError("LOCALVOL_KIND_KEEP cannot be used under CI=true")


@pytest.fixture(scope="session")
def kind_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a user of the kind cluster: a kubeconfig of the session's own
    (kind adds its context there, and removes it at kind-down)."""
    given = os.environ.get("LOCALVOL_KIND_KUBECONFIG")
    kubeconfig = Path(given) if given else tmp_path_factory.mktemp("kind") / "kubeconfig"
    return dict(os.environ, KUBECONFIG=str(kubeconfig))


# Each node's data root is a filesystem of its own, each of another size, as on nodes with
# disks of different sizes: the scheduler has different capacities to choose from. Mounted
# at the host paths deploy/kind/cluster.yaml gives the nodes, before the nodes start.
DATA_ROOT_SIZES = {"control-plane": 256, "worker": 384, "worker2": 768}  # MiB
DISKS = Path("/var/tmp/localvol-csi-kind-disks")


def make_disks() -> None:
    DISKS.mkdir(exist_ok=True)
    for name, mib in DATA_ROOT_SIZES.items():
        image, root = DISKS / f"{name}.img", KIND_DATA / name
        if root.is_mount():
            continue
        with image.open("wb") as f:
            f.truncate(mib << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        root.mkdir(parents=True, exist_ok=True)
        # A loop mount detaches its device when it is unmounted (hack/kind-down does).
        subprocess.run(["mount", "-o", "loop", str(image), str(root)], check=True)


def remove_disks() -> None:
    """After hack/kind-down, which unmounted them: their images."""
    shutil.rmtree(DISKS, ignore_errors=True)


@pytest.fixture(scope="session")
def kind(request: pytest.FixtureRequest, kind_env: dict[str, str]) -> Cluster:
    need_root()
    need(shutil.which("go") is not None, "needs Go to build kind, Kubernetes and the node image")
    request.config.stash[BEFORE] = HostState.read()
    make_disks()
    for script in ("kind-up", "kind-install"):
        proc = subprocess.run([str(REPO / "hack" / script)], cwd=REPO, env=kind_env, check=False)
        assert proc.returncode == 0, f"hack/{script} failed (its output is above)"
    return Cluster(kubeconfig=Path(kind_env["KUBECONFIG"]), context=CONTEXT)


@pytest.fixture
def kind_ns(kind: Cluster) -> Iterator[str]:
    """A namespace of the test's own, deleted with everything in it afterwards (the last
    test waits for every one of them before the cluster goes down)."""
    name = kind.new_namespace()
    yield name
    kind.delete_namespace(name)
