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

import pytest

from tests.e2e.cluster import REPO, Cluster
from tests.support.prerequisites import IN_CI, need, need_root

KEEP = os.environ.get("LOCALVOL_E2E_KEEP", "") not in ("", "0")
REPORT_KEY = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs the single-node test cluster")
    config.addinivalue_line("markers", "last: runs after every other e2e test")
    config.stash[REPORT_KEY] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``last`` (the teardown check) run after all others, in any selection."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


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
