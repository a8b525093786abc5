"""hack/cluster-host sysctl-diff on recorded `sysctl -a` text: a value written is a change,
an entry that prints several lines is compared in full, and the rows a table-like entry
gains by itself are not a change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests" / "fixtures" / "sysctl" / "host-2026-12-06.txt"
# fs.pipe-keep as the baseline saw it (4 rows), and later in the same run (10 rows).
PIPE_KEEP_4 = ["read 0", "copy 0", "set 0", "write 0"]
PIPE_KEEP_10 = [
    *PIPE_KEEP_4,
    *["look 0", "took 0", "brace 0", "marks_count 0", "marks_settings 0", "marks_all 0"],
]


def with_entry(text: str, key: str, values: list[str]) -> str:
    """``text`` with every line of ``key`` replaced by ``values`` (sorted, as the baseline
    is written)."""
    kept = [line for line in text.splitlines() if not line.startswith(f"{key} = ")]
    lines = kept + [f"{key} = {value}" for value in values]
    return "\n".join(sorted(lines)) + "\n"


def cluster_host(
    tmp_path: Path, before: str, now: str, command: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """hack/cluster-host COMMAND on two recorded readings (``--now`` the second)."""
    (tmp_path / "before").write_text(before)
    (tmp_path / "now").write_text(now)
    argv = [str(ROOT / "hack" / "cluster-host"), command, str(tmp_path / "before")]
    return subprocess.run(
        [sys.executable, *argv, "--now", str(tmp_path / "now"), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


def diff(tmp_path: Path, before: str, now: str) -> subprocess.CompletedProcess[str]:
    return cluster_host(tmp_path, before, now, "sysctl-diff")


@pytest.fixture(scope="module")
def recorded() -> str:
    text = RECORDED.read_text()
    assert text.count("fs.pipe-keep = ") > 1, "the recording lost its table-like entry"
    assert text.count("kernel.core_modes = ") > 1, "the recording lost its list entry"
    return text


def test_the_same_reading_is_no_change(tmp_path: Path, recorded: str) -> None:
    proc = diff(tmp_path, recorded, recorded)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_a_table_gaining_rows_is_no_change(tmp_path: Path, recorded: str) -> None:
    before = with_entry(recorded, "fs.pipe-keep", PIPE_KEEP_4)
    now = with_entry(recorded, "fs.pipe-keep", PIPE_KEEP_10)
    proc = diff(tmp_path, before, now)
    assert (proc.returncode, proc.stdout) == (0, "")


def test_a_table_losing_rows_is_no_change(tmp_path: Path, recorded: str) -> None:
    before = with_entry(recorded, "fs.pipe-keep", PIPE_KEEP_10)
    now = with_entry(recorded, "fs.pipe-keep", PIPE_KEEP_4)
    assert diff(tmp_path, before, now).returncode == 0


def test_a_row_of_a_table_written_is_a_change(tmp_path: Path, recorded: str) -> None:
    before = with_entry(recorded, "fs.pipe-keep", PIPE_KEEP_4)
    written = [row.replace("write 0", "write 1") for row in PIPE_KEEP_10]
    proc = diff(tmp_path, before, with_entry(recorded, "fs.pipe-keep", written))
    assert proc.returncode == 1
    assert proc.stdout == "fs.pipe-keep: write 0 -> write 1\n"


def test_a_single_value_written_is_a_change(tmp_path: Path, recorded: str) -> None:
    before = with_entry(recorded, "net.ipv4.ip_forward", ["0"])
    now = with_entry(recorded, "net.ipv4.ip_forward", ["1"])
    proc = diff(tmp_path, before, now)
    assert (proc.returncode, proc.stdout) == (1, "net.ipv4.ip_forward: 0 -> 1\n")


def test_a_value_with_spaces_is_one_value(tmp_path: Path, recorded: str) -> None:
    before = with_entry(recorded, "kernel.printk", ["4\t4\t1\t7"])
    now = with_entry(recorded, "kernel.printk", ["7\t4\t1\t7"])
    proc = diff(tmp_path, before, now)
    assert (proc.returncode, proc.stdout) == (1, "kernel.printk: 4\t4\t1\t7 -> 7\t4\t1\t7\n")


def test_a_list_entry_is_compared_in_full(tmp_path: Path, recorded: str) -> None:
    before = with_entry(recorded, "kernel.core_modes", ["file", "pipe"])
    now = with_entry(recorded, "kernel.core_modes", ["file", "pipe", "socket"])
    proc = diff(tmp_path, before, now)
    assert proc.returncode == 1
    assert proc.stdout == "kernel.core_modes: file | pipe -> file | pipe | socket\n"
    # The same items in another order are the same entry.
    reordered = with_entry(recorded, "kernel.core_modes", ["pipe", "file"])
    assert diff(tmp_path, before, reordered).returncode == 0


def test_counters_that_move_by_themselves_are_ignored(tmp_path: Path, recorded: str) -> None:
    now = with_entry(recorded, "fs.file-nr", ["99999\t0\t9223372036854775807"])
    assert diff(tmp_path, recorded, now).returncode == 0


def test_entries_only_one_reading_has_are_not_compared(tmp_path: Path, recorded: str) -> None:
    # An interface's entries come and go with it (the cluster's bridge, for one).
    now = recorded + "net.ipv4.conf.lvcl0.forwarding = 0\n"
    assert diff(tmp_path, recorded, now).returncode == 0


def restore(tmp_path: Path, before: str, now: str, *patterns: str) -> list[str]:
    proc = cluster_host(tmp_path, before, now, "sysctl-restore", *patterns)
    assert proc.returncode == 0, proc.stderr
    return list(proc.stdout.splitlines())


def test_restore_writes_back_only_the_changed_entries_matching(
    tmp_path: Path, recorded: str
) -> None:
    # What Podman's network stack does to a host: forwarding on, globally and per interface.
    now = with_entry(recorded, "net.ipv4.ip_forward", ["1"])
    now = with_entry(now, "net.ipv4.conf.all.forwarding", ["1"])
    now = with_entry(now, "kernel.panic", ["99"])  # changed, but not ours to restore
    before = with_entry(recorded, "net.ipv4.ip_forward", ["0"])
    before = with_entry(before, "net.ipv4.conf.all.forwarding", ["0"])
    writes = restore(tmp_path, before, now, "net.ipv4.ip_forward", "net.ipv4.conf.*.forwarding")
    assert writes == ["net.ipv4.ip_forward = 0", "net.ipv4.conf.all.forwarding = 0"]


def test_restore_leaves_entries_of_one_reading_and_tables(tmp_path: Path, recorded: str) -> None:
    # An interface that came (or went) since the baseline, and a table-like entry that grew.
    now = with_entry(recorded, "net.ipv4.conf.podman1.forwarding", ["1"])
    now = with_entry(now, "fs.pipe-keep", PIPE_KEEP_10)
    before = with_entry(recorded, "fs.pipe-keep", PIPE_KEEP_4)
    assert restore(tmp_path, before, now, "net.ipv4.conf.*.forwarding", "fs.*") == []
