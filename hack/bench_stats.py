"""The arithmetic and the tables of hack/bench, kept apart from gRPC and root so that
tests/unit can check them: per-lifecycle timings, percentiles, the order in which sides take
their turns, and the markdown rows of a side-by-side report."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

STEPS = ("create", "stage", "publish", "write", "unpublish", "unstage", "delete")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample that at least ``fraction`` of all
    samples do not exceed (so p99 of fewer than 100 samples is their maximum)."""
    if not values:
        raise ValueError("percentile of no samples")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction} outside (0, 1]")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def p99(values: Sequence[float]) -> float:
    return percentile(values, 0.99)


@dataclass
class Lifecycle:
    """The milliseconds each step of one volume's lifecycle took."""

    steps: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.steps[name] = (time.perf_counter() - started) * 1000

    def total(self) -> float:
        return sum(self.steps.values())


@dataclass
class Timings:
    """Lifecycles of one side in one cell (volume kind x concurrency), with the wall time
    of the batches that ran them, for throughput."""

    lifecycles: list[Lifecycle] = field(default_factory=list)
    wall: float = 0.0

    def add(self, other: Timings) -> None:
        self.lifecycles.extend(other.lifecycles)
        self.wall += other.wall

    def step(self, name: str) -> list[float]:
        return [life.steps[name] for life in self.lifecycles if name in life.steps]

    def totals(self) -> list[float]:
        return [life.total() for life in self.lifecycles if len(life.steps) == len(STEPS)]

    def median(self) -> float:
        return statistics.median(self.totals())

    def p99(self) -> float:
        return p99(self.totals())

    def throughput(self) -> float:
        """Lifecycles per second of wall time."""
        return len(self.lifecycles) / self.wall if self.wall > 0 else float("nan")

    def step_cells(self) -> list[str]:
        return [f"{statistics.median(self.step(s)):.1f}/{p99(self.step(s)):.1f}" for s in STEPS]


def schedule(rounds: int, sides: Sequence[str]) -> list[tuple[int, str]]:
    """The order of the timed batches: every round runs each side once, and the side that
    goes first moves on by one each round (A B, B A, A B ... for two sides), so neither side
    always runs on a machine the other has just warmed (or left busy with writeback)."""
    if rounds < 1 or not sides:
        raise ValueError("need at least one round and one side")
    if len(set(sides)) != len(sides):
        raise ValueError(f"side names repeat: {list(sides)}")
    order: list[tuple[int, str]] = []
    for round_ in range(rounds):
        shift = round_ % len(sides)
        order += [(round_, side) for side in [*sides[shift:], *sides[:shift]]]
    return order


def ratio(ours: float, theirs: float) -> str:
    if not theirs or math.isnan(theirs) or math.isnan(ours):
        return "n/a"
    return f"{ours / theirs:.2f}"


def comparison_rows(kind: str, concurrency: int, sides: dict[str, Timings]) -> list[str]:
    """One row per side for a cell. The first side is ours: each other side's row carries
    ours/that side for the lifecycle median and for throughput."""
    names = list(sides)
    ours = sides[names[0]]
    rows = []
    for name in names:
        t = sides[name]
        if name == names[0]:
            med_ratio = tput_ratio = "-"
        else:
            med_ratio = ratio(ours.median(), t.median())
            tput_ratio = ratio(ours.throughput(), t.throughput())
        rows.append(
            f"| {kind} | {concurrency} | {name} | {t.median():.1f} | {t.p99():.1f} | "
            f"{t.throughput():.1f} | {med_ratio} | {tput_ratio} | "
            + " | ".join(t.step_cells())
            + " |"
        )
    return rows


COMPARISON_HEADER = [
    "| volume type | conc. | side | lifecycle median ms | lifecycle p99 ms | lifecycles/s | "
    "ours/side median | ours/side throughput | " + " | ".join(f"{s} med/p99" for s in STEPS) + " |",
    "|" + "---|" * (8 + len(STEPS)),
]


# -- scale: each call's median at each count of volumes held ----------------------------
SCALE_CALLS = ("create", "stage", "publish", "unpublish", "unstage", "delete", "capacity")


def scale_header(names: Sequence[str]) -> list[str]:
    """The scale table's header: ours first, then each peer and ours over it, then every
    driver over itself at the first size."""
    ours, peers = names[0], names[1:]
    cells = [f"{ours} ms"]
    for peer in peers:
        cells += [f"{peer} ms", f"{ours}/{peer}"]
    cells += [f"{name} vs first size" for name in names]
    return [
        "| volumes held | conc. | call | " + " | ".join(cells) + " |",
        "|" + "---|" * (3 + len(cells)),
    ]


def scale_rows(
    size: int,
    concurrency: int,
    medians: dict[str, dict[str, float]],
    first: dict[str, dict[str, float]],
) -> list[str]:
    """One row per call: each driver's median (ms) at ``size`` volumes held, ours over each
    peer, and each driver's median over its own in ``first`` (the first size measured)."""
    names = list(medians)
    ours = medians[names[0]]
    rows = []
    for call in SCALE_CALLS:
        cells = [f"{ours[call]:.2f}"]
        for peer in names[1:]:
            cells += [f"{medians[peer][call]:.2f}", ratio(ours[call], medians[peer][call])]
        cells += [ratio(medians[name][call], first[name][call]) for name in names]
        rows.append(f"| {size} | {concurrency} | {call} | " + " | ".join(cells) + " |")
    return rows
