"""hack/bench's own logic: percentiles, the interleaving of sides, the rows of its report,
the counting of system calls from strace output, and its option parsing."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

HACK = Path(__file__).resolve().parents[2] / "hack"
sys.path.insert(0, str(HACK))

import bench_stats  # noqa: E402
import bench_syscalls  # noqa: E402
from bench_stats import STEPS, Lifecycle, Timings  # noqa: E402


def load_bench() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("bench_script", str(HACK / "bench"))
    spec = importlib.util.spec_from_loader("bench_script", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def life(**steps: float) -> Lifecycle:
    return Lifecycle(steps={s: steps.get(s, 1.0) for s in STEPS})


# -- percentiles ---------------------------------------------------------------------------
def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert bench_stats.percentile(values, 0.5) == 50
    assert bench_stats.percentile(values, 0.99) == 99
    assert bench_stats.percentile(values, 1.0) == 100
    assert bench_stats.percentile([3.0, 1.0, 2.0], 0.5) == 2  # order of input is irrelevant


def test_p99_of_fewer_than_100_samples_is_the_maximum() -> None:
    assert bench_stats.p99([float(v) for v in range(60)]) == 59
    assert bench_stats.p99([7.0]) == 7


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_percentile_refuses_fractions_outside_the_unit_interval(fraction: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        bench_stats.percentile([1.0], fraction)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        bench_stats.percentile([], 0.5)


# -- interleaving --------------------------------------------------------------------------
def test_two_sides_alternate_which_goes_first() -> None:
    order = bench_stats.schedule(3, ["ours", "peer"])
    assert order == [
        (0, "ours"),
        (0, "peer"),
        (1, "peer"),
        (1, "ours"),
        (2, "ours"),
        (2, "peer"),
    ]


def test_three_sides_rotate_and_each_runs_once_per_round() -> None:
    order = bench_stats.schedule(4, ["a", "b", "c"])
    firsts = [side for i, (_, side) in enumerate(order) if i % 3 == 0]
    assert firsts == ["a", "b", "c", "a"]
    for round_ in range(4):
        assert sorted(side for r, side in order if r == round_) == ["a", "b", "c"]


def test_schedule_refuses_repeated_sides_and_no_rounds() -> None:
    with pytest.raises(ValueError, match="repeat"):
        bench_stats.schedule(2, ["a", "a"])
    with pytest.raises(ValueError, match="at least one"):
        bench_stats.schedule(0, ["a"])


def test_interleaved_runs_the_schedule_with_distinct_numbers() -> None:
    bench = load_bench()
    seen: list[tuple[str, int]] = []

    def side(name: str) -> bench.Work:
        def work(index: int, t: Lifecycle) -> None:
            seen.append((name, index))
            for step in STEPS:
                t.steps[step] = 1.0

        return work

    cell = bench.interleaved({"a": side("a"), "b": side("b")}, 2, 3, 1, iter(range(1000)))
    # one warm-up each, then a b / b a in batches of 3
    assert [name for name, _ in seen] == ["a", "b"] + ["a"] * 3 + ["b"] * 6 + ["a"] * 3
    assert len({index for _, index in seen}) == len(seen)
    assert len(cell["a"].lifecycles) == len(cell["b"].lifecycles) == 6  # warm-ups not kept


# -- timings and rows ----------------------------------------------------------------------
def test_timings_total_only_complete_lifecycles() -> None:
    partial = Lifecycle(steps={"create": 500.0})
    t = Timings(lifecycles=[life(), life(create=8.0), partial], wall=2.0)
    assert t.totals() == [7.0, 14.0]
    assert t.median() == 10.5
    assert t.throughput() == 1.5  # lifecycles per second of wall time
    assert t.step("create") == [1.0, 8.0, 500.0]


def test_timings_add_keeps_lifecycles_and_wall() -> None:
    t = Timings()
    t.add(Timings(lifecycles=[life()], wall=1.0))
    t.add(Timings(lifecycles=[life()], wall=3.0))
    assert len(t.lifecycles) == 2
    assert t.throughput() == 0.5


def test_comparison_rows_give_ours_over_each_side() -> None:
    ours = Timings(lifecycles=[life()] * 4, wall=1.0)  # 7 ms, 4/s
    peer = Timings(lifecycles=[life(create=8.0)] * 2, wall=1.0)  # 14 ms, 2/s
    rows = bench_stats.comparison_rows("directory", 4, {"ours": ours, "peer": peer})
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert cells[0][:8] == ["directory", "4", "ours", "7.0", "7.0", "4.0", "-", "-"]
    assert cells[1][:8] == ["directory", "4", "peer", "14.0", "14.0", "2.0", "0.50", "2.00"]
    assert cells[1][8] == "8.0/8.0"  # create median/p99
    assert len(cells[0]) == len(bench_stats.COMPARISON_HEADER[0].strip("|").split("|"))


def test_scale_rows_give_each_call_beside_the_peer_and_against_the_first_size() -> None:
    first = {
        "ours": dict.fromkeys(bench_stats.SCALE_CALLS, 2.0),
        "peer": dict.fromkeys(bench_stats.SCALE_CALLS, 1.0),
    }
    now = {
        "ours": dict.fromkeys(bench_stats.SCALE_CALLS, 2.2),
        "peer": {**dict.fromkeys(bench_stats.SCALE_CALLS, 1.0), "create": 11.0},
    }
    rows = bench_stats.scale_rows(5000, 4, now, first)
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [c[2] for c in cells] == list(bench_stats.SCALE_CALLS)
    create = cells[0]
    assert create == ["5000", "4", "create", "2.20", "11.00", "0.20", "1.10", "11.00"]
    header = bench_stats.scale_header(["ours", "peer"])
    assert len(create) == len(header[0].strip("|").split("|")) == header[1].count("---")


def test_scale_sizes_stop_at_the_volumes_asked_for() -> None:
    import bench_scale

    assert bench_scale.sizes([0, 1000, 2500, 5000, 10000], 3000) == [0, 1000, 2500, 3000]
    assert bench_scale.sizes([0, 1000], 1000) == [0, 1000]


def test_ratio_of_nothing_is_not_a_number() -> None:
    assert bench_stats.ratio(1.0, 0.0) == "n/a"
    assert bench_stats.ratio(float("nan"), 1.0) == "n/a"


# -- strace --------------------------------------------------------------------------------
STRACE = """\
100 fsync(7)                            = 0
101 fdatasync(9 <unfinished ...>
100 clone3({flags=CLONE_VM|CLONE_FS|CLONE_THREAD|CLONE_SYSVSEM, child_tid=0x1}, 88) = 102
100 vfork( <unfinished ...>
103 execve("/usr/local/sbin/mount", ["mount", "--bind", "/a", "/b"], 0x7f) = -1 ENOENT (No such)
103 execve("/usr/bin/mount", ["mount", "--bind", "/a", "/b"], 0x7f /* 9 vars */ <unfinished ...>
101 <... fdatasync resumed>)            = 0
103 <... execve resumed>)               = 0
100 <... vfork resumed>)                = 103
103 fsync(3)                            = 0
104 clone(child_stack=NULL, flags=CLONE_VM|CLONE_VFORK|SIGCHLD) = 105
105 execve("/sbin/losetup", ["losetup", "-d", "/dev/loop3"], 0x1 /* 2 vars */) = 0
105 +++ exited with 0 +++
"""


def test_strace_counts_attribute_fsyncs_and_tell_threads_from_forks() -> None:
    counts = bench_syscalls.parse_strace(STRACE)
    assert counts.fsync_driver == 2  # fsync and the resumed fdatasync of tasks 100, 101
    assert counts.fsync_children == 1  # task 103 exec'd mount, so its fsync is mount's
    assert counts.threads == 1
    assert counts.forks == 2  # vfork and a clone without CLONE_THREAD
    assert dict(counts.programs) == {"mount": 1, "losetup": 1}  # the ENOENT try is no program
    assert counts.programs_text() == "losetup x1, mount x1"


def test_strace_resumed_results_complete_the_started_call() -> None:
    found = bench_syscalls.calls(STRACE)
    execs = [(c.task, c.result) for c in found if c.name == "execve"]
    assert execs == [(103, "-1"), (103, "0"), (105, "0")]
    assert [c.result for c in found if c.name == "vfork"] == ["103"]


def test_strace_of_nothing_counts_nothing() -> None:
    counts = bench_syscalls.parse_strace("")
    assert (counts.fsync_driver, counts.fsync_children, counts.forks) == (0, 0, 0)
    assert counts.programs_text() == "none"


# -- options -------------------------------------------------------------------------------
def test_kind_params_replace_the_defaults_of_one_kind() -> None:
    bench = load_bench()
    defaults = {"directory": {"volumeType": "directory"}}
    parsed = bench.kind_params(["block:a=1,b=x=y", "loop-ext4:"], defaults)
    assert parsed == {
        "directory": {"volumeType": "directory"},
        "block": {"a": "1", "b": "x=y"},
        "loop-ext4": {},
    }


@pytest.mark.parametrize("spec", ["nokind", "tape:a=1", "block:novalue", "block:=1"])
def test_kind_params_refuse_malformed_options(spec: str) -> None:
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.kind_params([spec], {})


def test_concurrency_list() -> None:
    bench = load_bench()
    assert bench.concurrency_list("1,4") == [1, 4]
    for bad in ("", "0", "1,x", "-2"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.concurrency_list(bad)
