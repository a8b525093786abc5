"""What a new user does first: the README's example verbatim, then every example in
deploy/examples with the checks hack/examples makes (one place for those checks)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.cluster import REPO, Cluster
from tests.e2e.host import KIND_DATA
from tests.integration.snapshot_support import has_cap_sys_resource

pytestmark = pytest.mark.e2e

EXAMPLES = sorted(p.name for p in (REPO / "deploy" / "examples").iterdir() if p.is_dir())


def readme_first_example() -> str:
    """The first YAML block of README.md, as a user would copy it."""
    match = re.search(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert match, "README.md has no YAML example"
    return match.group(1)


def test_readme_first_example(cluster: Cluster, ns: str) -> None:
    cluster.apply(ns, readme_first_example())
    cluster.wait_ready(ns, "my-app")
    assert cluster.exec(ns, "my-app", "cat /data/hello.txt") == "hello\n"
    assert cluster.claim(ns, "my-data").status.phase == "Bound"


@pytest.fixture(scope="module")
def example_runs(cluster: Cluster) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """Every example's checks at once, each its own hack/examples process: they use
    objects of their own names and spend their time waiting on the cluster, so running
    them side by side takes about as long as the slowest one (expansion)."""
    env = dict(
        cluster.env,
        LOCALVOL_NODE_DATA=f"{KIND_DATA}/{{node}}",
        LOCALVOL_ONLINE_EXT4_GROWTH="yes" if has_cap_sys_resource() else "no",
    )
    runs = {
        example: subprocess.Popen(
            [str(REPO / "hack" / "examples"), example],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for example in EXAMPLES
    }
    yield runs
    for proc in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("example", EXAMPLES)
def test_example(example_runs: dict[str, subprocess.Popen[str]], example: str) -> None:
    proc = example_runs[example]
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"{example}:\n{stderr}"
    assert "all examples passed" in stderr
