"""hack/timings: the phases of a run on one screen, in the order they started, a phase that
ran inside another (a build inside the e2e tier) indented under it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def summary(tmp_path: Path, lines: list[str]) -> list[str]:
    path = tmp_path / "timings"
    path.write_text("".join(f"{line}\n" for line in lines))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "timings"), "summary", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.splitlines()


def test_phases_in_order_with_the_nested_ones_indented(tmp_path: Path) -> None:
    t0 = 1_700_000_000.0
    out = summary(
        tmp_path,
        [
            f"{t0 + 100}\t{t0 + 1300}\ttests: e2e (60 passed)",
            f"{t0}\t{t0 + 18}\tset-up: host packages",
            f"{t0 + 101}\t{t0 + 701}\tbuild: Go programs of the cluster",
            f"{t0 + 102}\t{t0 + 250.4}\tbuild: images (Debian-based, beside the Go build)",
            "a line that is not a phase",
            f"{t0 + 1300}\t{t0 + 1400}\ttests: unit (500 passed, 1 failed)",
        ],
    )
    assert out[0] == "where the time went: 23:20 (m:ss) from the first phase to the last"
    assert out[3:] == [
        "   0:00    0:18  set-up: host packages",
        "   1:40   20:00  tests: e2e (60 passed)",
        "   1:41   10:00    build: Go programs of the cluster",
        "   1:42    2:28      build: images (Debian-based, beside the Go build)",
        "  21:40    1:40  tests: unit (500 passed, 1 failed)",
    ]


def test_a_lane_beside_the_rest_is_listed_under_its_name(tmp_path: Path) -> None:
    t0 = 1_700_000_000.0
    out = summary(
        tmp_path,
        [
            f"{t0}\t{t0 + 900}\ttests: e2e (70 passed)",
            f"{t0 + 5}\t{t0 + 60}\tkind: node image",
            f"{t0 + 10}\t{t0 + 50}\ttests: integration (170 passed)\tthe other tiers",
            f"{t0 + 50}\t{t0 + 500}\ttests: reliability (140 passed)\tthe other tiers",
        ],
    )
    assert out[3:] == [
        "   0:00   15:00  tests: e2e (70 passed)",
        "   0:05    0:55    kind: node image",
        "                 the other tiers:",
        "   0:10    0:40    tests: integration (170 passed)",
        "   0:50    7:30    tests: reliability (140 passed)",
    ]


def test_an_empty_record_says_so(tmp_path: Path) -> None:
    assert summary(tmp_path, []) == ["no phases recorded"]
