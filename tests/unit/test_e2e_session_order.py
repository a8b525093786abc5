"""The e2e tier's order, as pytest collects it: the placement test on fresh data roots first,
the disruptive tests after the storage suite, the lost node after the other disruptive ones,
and the host check after everything (a test after it would find no cluster)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _collected(*paths: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALVOL_E2E")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *paths],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if "::" in line]


def _module(nodeid: str) -> str:
    return nodeid.split("::")[0].removeprefix("tests/e2e/")


def test_the_host_check_is_last_and_the_lost_node_just_before_it() -> None:
    order = [_module(n) for n in _collected("tests/e2e")]
    assert order[0] == "test_nodes.py"
    assert order[-1] == "test_zz_host_clean.py"
    assert order[-2] == "test_node_loss.py"
    disruptive = {"test_disruption.py", "test_driver_rollout.py", "test_node_loss.py"}
    first_disruptive = min(i for i, m in enumerate(order) if m in disruptive)
    assert set(order[first_disruptive:-1]) == disruptive
    last_suite = max(i for i, m in enumerate(order) if m == "test_storage_suite.py")
    assert last_suite < first_disruptive


def test_the_order_holds_in_a_selection_with_other_tiers() -> None:
    order = [_module(n) for n in _collected("tests/e2e/test_zz_host_clean.py", "tests/e2e")]
    assert order[-1] == "test_zz_host_clean.py"
    order = _collected("tests/e2e/test_node_loss.py", "tests/unit/test_timings.py")
    assert _module(order[-1]) == "test_node_loss.py"
