"""End-to-end tier: a real single-node Kubernetes (hack/cluster-up) with deploy/ applied
through deploy/overlays/cluster. The first test that needs the cluster brings it up (built
from packages and the Go module proxy, caches outside the clone); the last test takes it
down and checks that the host is as it was.

Set LOCALVOL_E2E_KEEP=1 to leave the cluster running afterwards (the teardown test is then
skipped, so never under CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests.e2e import storage_suite
from tests.e2e.cluster import REPO, Cluster
from tests.support.prerequisites import IN_CI, need, need_root

KEEP = os.environ.get("LOCALVOL_E2E_KEEP", "") not in ("", "0")
REPORT_KEY = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs the single-node test cluster")
    config.addinivalue_line("markers", "last: runs after every other e2e test")
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


def _order(item: pytest.Item) -> tuple[bool, bool, bool, bool, bool]:
    marked = {m.name for m in item.iter_markers()}
    return (
        "kind" not in marked,
        "last" in marked,
        "disruptive" in marked,
        _is_storage_suite(item),
        "quiet" not in marked,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The whole session's order, in any selection: the kind tier first, alone on the
    machine (its last test compares the host with its reading from before the kind cluster,
    and a second cluster beside it would change both); tests marked ``quiet`` next, on a
    quiet cluster; then the other e2e tests and the other tiers, in their usual order,
    beside the storage suite's runs (started with the first of them); then the storage
    suite's own tests, which wait for those runs; then the ``disruptive`` ones (a node
    reboot kills every pod, and a resizer restarted without its lease waits out the old
    one's, up to 163 s); the ``last`` test (the teardown check) after all."""
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
def cluster() -> Cluster:
    need_root()
    need(shutil.which("go") is not None, "needs Go to build Kubernetes and the sidecars")
    proc = subprocess.run([str(REPO / "hack" / "cluster-up")], cwd=REPO, check=False)
    assert proc.returncode == 0, "hack/cluster-up failed (its output is above)"
    return Cluster()


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
