"""hack/bench scale: what the count of volumes a node holds costs each call, ours beside a
peer driver in one run.

Every driver is filled, size step by size step (--steps, up to --volumes), with directory
volumes of 1 MiB (four clients at a time, not timed). At each size and concurrency, fresh
directory volumes go through their whole lifecycle on every driver in turn (rounds
interleaved as in `compare`), and GetCapacity is asked as often; the table gives each call's
median per driver, ours/peer, and each driver's median against its own at the first size
(flat is 1.0). After the last size: a full ListVolumes, a restart to ready and the resident
memory of the drivers this run started.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_drivers import Driver
from bench_lifecycles import MIB, capability, driver_lifecycle, interleaved
from bench_stats import SCALE_CALLS, scale_header, scale_rows, schedule

from csi.pb import csi_pb2

KIND = "directory"
DEFAULT_STEPS = (0, 1000, 2500, 5000, 10000)
FILL_CLIENTS = 4


def sizes(steps: list[int], volumes: int) -> list[int]:
    """The sizes to measure at: the steps up to ``volumes``, and ``volumes`` itself."""
    return sorted({s for s in steps if s < volumes} | {volumes})


def fill(driver: Driver, start: int, end: int) -> None:
    """Volumes ``fill-start`` .. ``fill-(end-1)`` made on ``driver``."""
    cap = capability("mount")

    def make(index: int) -> None:
        driver.controller.CreateVolume(
            csi_pb2.CreateVolumeRequest(
                name=f"fill-{index}",
                volume_capabilities=[cap],
                parameters=driver.params[KIND],
                capacity_range=csi_pb2.CapacityRange(required_bytes=MIB),
            )
        )

    with ThreadPoolExecutor(FILL_CLIENTS) as pool:
        list(pool.map(make, range(start, end)))


def capacity_samples(driver: Driver, count: int, concurrency: int) -> list[float]:
    """Milliseconds of ``count`` GetCapacity calls on ``concurrency`` clients."""
    request = csi_pb2.GetCapacityRequest(
        volume_capabilities=[capability("mount")], parameters=driver.params[KIND]
    )

    def ask(_: int) -> float:
        started = time.perf_counter()
        driver.controller.GetCapacity(request)
        return (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(ask, range(count)))


def listing_seconds(driver: Driver) -> tuple[int, float]:
    """Volumes listed and seconds taken by a full ListVolumes in pages of 500."""
    started, token, seen = time.perf_counter(), "", 0
    while True:
        page = driver.controller.ListVolumes(
            csi_pb2.ListVolumesRequest(max_entries=500, starting_token=token)
        )
        seen += len(page.entries)
        token = page.next_token
        if not token:
            return seen, time.perf_counter() - started


def scale(args: argparse.Namespace, drivers: list[Driver], base: Path) -> list[str]:
    base.mkdir(parents=True, exist_ok=True)
    names = [d.name for d in drivers]
    numbering: Iterator[int] = iter(range(10**9))
    lines = [
        f"{args.rounds} rounds of {args.samples} lifecycles per driver, size and concurrency;"
        f" GetCapacity {args.rounds} x {args.samples} times. Medians in ms.",
        "",
        *scale_header(names),
    ]
    print("\n".join(lines), flush=True)
    first: dict[int, dict[str, dict[str, float]]] = {}
    held = 0
    for size in sizes(args.steps, args.volumes):
        started = time.perf_counter()
        for driver in drivers:
            fill(driver, held, size)
        held = size
        print(f"(filled to {size} in {time.perf_counter() - started:.0f} s)", flush=True)
        for concurrency in args.concurrency:
            sides = {
                d.name: lambda i, t, d=d: driver_lifecycle(d, KIND, i, base, t) for d in drivers
            }
            timings = interleaved(sides, args.rounds, args.samples, concurrency, numbering)
            capacity: dict[str, list[float]] = {name: [] for name in names}
            by_name = {d.name: d for d in drivers}
            for _, name in schedule(args.rounds, names):
                capacity[name] += capacity_samples(by_name[name], args.samples, concurrency)
            medians = {
                name: {
                    call: statistics.median(
                        capacity[name] if call == "capacity" else timings[name].step(call)
                    )
                    for call in SCALE_CALLS
                }
                for name in names
            }
            rows = scale_rows(size, concurrency, medians, first.setdefault(concurrency, medians))
            print("\n".join(rows), flush=True)
            lines += rows
    lines += ["", f"At {held} volumes held (and the lifecycles' own, all deleted):", ""]
    lines += ["| driver | full ListVolumes (pages of 500) | restart to ready | resident memory |"]
    lines += ["|---|---|---|---|"]
    for driver in drivers:
        seen, listing = listing_seconds(driver)
        restart, rss = "n/a", "n/a"
        if driver.own:
            driver.stop()
            restart = f"{driver.start():.2f} s"
            rss = f"{driver.rss_mib():.1f} MiB"
        lines.append(f"| {driver.name} | {seen} volumes in {listing:.3f} s | {restart} | {rss} |")
    return lines
