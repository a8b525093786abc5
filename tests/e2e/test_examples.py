"""What a new user does first: the README's example verbatim, then every example in
deploy/examples with the checks hack/examples makes (one place for those checks)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.e2e.cluster import NODE_DATA, REPO, Cluster
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


@pytest.mark.parametrize("example", EXAMPLES)
def test_example(cluster: Cluster, example: str) -> None:
    env = dict(
        cluster.env,
        LOCALVOL_NODE_DATA=str(NODE_DATA),
        LOCALVOL_ONLINE_EXT4_GROWTH="yes" if has_cap_sys_resource() else "no",
    )
    proc = subprocess.run(
        [str(REPO / "hack" / "examples"), example],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"{example}:\n{proc.stderr}"
    assert "all examples passed" in proc.stderr
