"""End-to-end tier: the kind cluster of deploy/kind/cluster.yaml (one control plane, two
workers) as a user starts it, hack/kind-up then hack/kind-install (the kind overlay, through
deploy/overlays/kind-e2e); where no Docker engine answers (this machine), on a Podman of the
project's own with a node image built here. Each node's data root is a disk of its own, each
of another size. The first test that needs the cluster brings it up; the last
(test_zz_host_clean) takes it down with hack/kind-down and checks that the host is as it
was before.

Set LOCALVOL_E2E_KEEP=1 to leave the cluster running afterwards (the teardown test is then
skipped, so never under CI); LOCALVOL_E2E_KUBECONFIG names the kubeconfig kind writes to
(by default one of the session's own). hack/test runs this tier beside the others, in a
session of its own: LOCALVOL_E2E_HOST_BEFORE names the host as it read it before any tier
started, and LOCALVOL_E2E_AFTER_TIERS a file that appears when the other tiers are done (the
host check reads the host with nothing of theirs running)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e import storage_suite
from tests.e2e.cluster import REPO, Cluster
from tests.e2e.host import KIND_DATA, HostState
from tests.support.prerequisites import IN_CI, need, need_root

KEEP = os.environ.get("LOCALVOL_E2E_KEEP", "") not in ("", "0")
HOST_BEFORE = os.environ.get("LOCALVOL_E2E_HOST_BEFORE", "")
AFTER_TIERS = os.environ.get("LOCALVOL_E2E_AFTER_TIERS", "")
REPORT_KEY = pytest.StashKey[list[str]]()
BEFORE = pytest.StashKey[HostState]()
CLUSTER_NAME = "localvol"  # deploy/kind/cluster.yaml
CONTEXT = f"kind-{CLUSTER_NAME}"
CONTROL_PLANE = f"{CLUSTER_NAME}-control-plane"
WORKERS = (f"{CLUSTER_NAME}-worker", f"{CLUSTER_NAME}-worker2")
OVERLAY = "deploy/overlays/kind-e2e"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs the three-node kind cluster")
    config.addinivalue_line(
        "markers", "last: runs after every other e2e test (with disruptive: every other of those)"
    )
    config.addinivalue_line(
        "markers", "first: runs before every other e2e test, on data roots as they were made"
    )
    config.addinivalue_line(
        "markers", "quiet: measures the cluster's pace, so runs first, before the storage suite"
    )
    config.addinivalue_line(
        "markers", "disruptive: restarts the driver or the node, so runs after the other e2e tests"
    )
    config.stash[REPORT_KEY] = []


STORAGE_SUITE_TEST = "tests/e2e/test_storage_suite.py::test_external_storage_suite"
SUITE_SELECTED = pytest.StashKey[bool]()


def _is_storage_suite(item: pytest.Item) -> bool:
    return item.nodeid.startswith(STORAGE_SUITE_TEST)


def _order(item: pytest.Item) -> int:
    marked = {m.name for m in item.iter_markers()}
    if "first" in marked:
        return 0
    if "quiet" in marked:
        return 1
    if "disruptive" in marked:
        return 5 if "last" in marked else 4
    if "last" in marked:
        return 6
    return 3 if _is_storage_suite(item) else 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The whole session's order, in any selection: the test marked ``first`` (placement by
    capacity, on data roots nothing else has used yet); tests marked ``quiet`` next, on a
    quiet cluster; then the other e2e tests and the other tiers, in their usual order,
    beside the storage suite's runs (started with the first of them); then the storage
    suite's own tests, which wait for those runs; then the ``disruptive`` ones (a node
    reboot kills every pod, and a resizer restarted without its lease waits out the old
    one's, up to 163 s), a disruptive one marked ``last`` (a node lost) after the others;
    the teardown check, marked ``last`` alone, after all."""
    items.sort(key=_order)
    config.stash[SUITE_SELECTED] = any(_is_storage_suite(item) for item in items)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(REPORT_KEY, [])
    if lines:
        terminalreporter.section("e2e figures (reported, not asserted)")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def report(request: pytest.FixtureRequest) -> list[str]:
    """Lines for the end-of-run summary."""
    return request.config.stash[REPORT_KEY]


@pytest.fixture(scope="session")
def kind_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a user of the kind cluster: a kubeconfig of the session's own
    (kind adds its context there, and removes it at kind-down)."""
    given = os.environ.get("LOCALVOL_E2E_KUBECONFIG")
    kubeconfig = Path(given) if given else tmp_path_factory.mktemp("kind") / "kubeconfig"
    return dict(
        os.environ, KUBECONFIG=str(kubeconfig), KIND_OVERLAY=OVERLAY, KIND_STORAGE_SUITE="1"
    )


# Each node's data root is a filesystem of its own, each of another size, as on nodes with
# disks of different sizes: the scheduler has different capacities to choose from (the
# largest volume, deploy/overlays/kind-e2e, is below the biggest). Mounted at the host paths
# deploy/kind/cluster.yaml gives the nodes, before the nodes start; sparse images, so only
# what the volumes write takes space.
DATA_ROOT_SIZES = {CONTROL_PLANE: 2 << 30, WORKERS[0]: 8 << 30, WORKERS[1]: 16 << 30}
DISKS = Path("/var/tmp/localvol-csi-kind-disks")


def make_disks() -> None:
    DISKS.mkdir(exist_ok=True)
    for node, size in DATA_ROOT_SIZES.items():
        image, root = DISKS / f"{node}.img", KIND_DATA / node
        if root.is_mount():
            continue
        with image.open("wb") as f:
            f.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        root.mkdir(parents=True, exist_ok=True)
        # A loop mount detaches its device when it is unmounted (hack/kind-down does).
        subprocess.run(["mount", "-o", "loop", str(image), str(root)], check=True)


def remove_disks() -> None:
    """After hack/kind-down, which unmounted them: their images."""
    shutil.rmtree(DISKS, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, kind_env: dict[str, str]) -> Cluster:
    need_root()
    need(shutil.which("go") is not None, "needs Go to build kind, Kubernetes and the node image")
    request.config.stash[BEFORE] = (
        HostState.load(Path(HOST_BEFORE)) if HOST_BEFORE else HostState.read()
    )
    make_disks()
    for script in ("kind-up", "kind-install"):
        proc = subprocess.run([str(REPO / "hack" / script)], cwd=REPO, env=kind_env, check=False)
        assert proc.returncode == 0, f"hack/{script} failed (its output is above)"
    return Cluster(
        kubeconfig=Path(kind_env["KUBECONFIG"]),
        context=CONTEXT,
        data_roots={node: KIND_DATA / node for node in DATA_ROOT_SIZES},
    )


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    """A namespace of the test's own, deleted with everything in it afterwards. The
    deletion is not waited for (its volumes go while the next test runs); the last test
    waits for every one of them before the cluster goes down."""
    name = cluster.new_namespace()
    yield name
    cluster.delete_namespace(name)


def pytest_sessionstart(session: pytest.Session) -> None:
    if KEEP and IN_CI:
        raise pytest.UsageError("LOCALVOL_E2E_KEEP cannot be used under CI=true")


# --- Kubernetes' storage suite, beside the other tests --------------------------------------


@pytest.fixture(scope="session")
def storage_suite_runs(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[storage_suite.Outcome]]]:
    """Every definition's ginkgo run at once, in the background: the suite's pace is set by
    its polling, not by the CPU, so side by side with each other and with the other e2e
    tests they take about as long as the longest alone (each run's specs in namespaces of
    their own, with classes of their own). The suite's tests wait for their namespaces."""
    need(shutil.which("go") is not None, "needs Go to build e2e.test")
    built = subprocess.run([str(REPO / "hack" / "storage-suite"), "--build-only"], check=False)
    assert built.returncode == 0, "hack/storage-suite --build-only failed (its output is above)"
    out = tmp_path_factory.mktemp("storage-suite")
    selection = storage_suite.SELECTIONS["default"]
    with ThreadPoolExecutor(max_workers=len(selection.definitions)) as pool:
        yield {
            name: pool.submit(
                storage_suite.run_definition,
                storage_suite.Target(cluster.kubeconfig, cluster.context),
                storage_suite.definition(name),
                out / name,
                selection.suites_of(name),
                selection.without_tags,
            )
            for name in selection.definitions
        }


@pytest.fixture(autouse=True)
def _storage_suite_beside(request: pytest.FixtureRequest) -> None:
    """Starts the storage suite's runs with the first e2e test not marked ``quiet``, when
    the suite's tests are selected."""
    if request.node.get_closest_marker("quiet") is not None:
        return
    if request.node.get_closest_marker("e2e") is None:
        return
    if request.config.stash.get(SUITE_SELECTED, False):
        request.getfixturevalue("storage_suite_runs")
