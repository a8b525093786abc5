from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.driver import RunningDriver, running_driver


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[RunningDriver]:
    """A driver serving on a fresh data directory."""
    with running_driver(tmp_path / "data") as running:
        yield running


# The lane of hack/timings this session's tiers go in, when it runs beside another.
LANE = os.environ.get("LOCALVOL_TIMINGS_LANE", "")


class TierTimes:
    """Where the time went: each tier's first start, last stop and outcomes (a test's setup,
    call and teardown), written at the end as one line per tier for hack/timings when
    LOCALVOL_TIMINGS names its file."""

    def __init__(self) -> None:
        self.tiers: dict[str, dict[str, float]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        parts = report.nodeid.split("/")
        tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else parts[0].split("::")[0]
        seen = self.tiers.setdefault(tier, {"start": report.start, "stop": report.stop})
        seen["start"] = min(seen["start"], report.start)
        seen["stop"] = max(seen["stop"], report.stop)
        if report.when == "call" or report.outcome != "passed":
            seen[report.outcome] = seen.get(report.outcome, 0) + 1

    def pytest_sessionfinish(self) -> None:
        path = os.environ.get("LOCALVOL_TIMINGS")
        if not path or not self.tiers:
            return
        with open(path, "a") as out:
            for tier, seen in self.tiers.items():
                counts = ", ".join(
                    f"{int(seen[o])} {o}" for o in ("passed", "failed", "skipped") if seen.get(o)
                )
                lane = f"\t{LANE}" if LANE else ""
                out.write(
                    f"{seen['start']:.3f}\t{seen['stop']:.3f}\ttests: {tier} ({counts}){lane}\n"
                )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(TierTimes(), "localvol-tier-times")
