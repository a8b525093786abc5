"""Counting what one lifecycle costs a driver process in system calls: fsyncs (its own and
those of the programs it runs) and forks (with the programs they exec), read from an
``strace -f`` attached to the running driver for just that lifecycle.

The parser is pure (tests/unit feed it strace text); ``traced`` runs strace itself."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SYNC_CALLS = ("fsync", "fdatasync", "syncfs", "sync", "sync_file_range")
FORK_CALLS = ("clone", "clone3", "fork", "vfork")
TRACED = (*SYNC_CALLS, *FORK_CALLS, "execve")

# "1234 name(args...) = result" is one call. When strace had to interrupt a call, its start
# ends in "<unfinished ...>" and a later "1234 <... name resumed>...) = result" finishes it.
_CALL = re.compile(r"^(\d+)\s+(\w+)\((.*)$")
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)$")
_RESULT = re.compile(r"\)\s+=\s+(-?\d+|\?)")
_EXEC_PROGRAM = re.compile(r'^"([^"]*)"')


@dataclass
class Call:
    task: int
    name: str
    arguments: str
    result: str  # "?" while unknown: an execve that replaced the task never returns to it


def _result(text: str) -> str:
    found = _RESULT.findall(text)
    return str(found[-1]) if found else "?"


def calls(text: str) -> list[Call]:
    """Every traced call in ``strace -f`` output, in the order the calls started."""
    pending: dict[int, Call] = {}  # task -> its call that strace interrupted
    found: list[Call] = []
    for raw in text.splitlines():
        line = raw.strip()
        resumed = _RESUMED.match(line)
        if resumed:
            call = pending.pop(int(resumed.group(1)), None)
            if call is not None:
                call.result = _result(resumed.group(3))
            continue
        match = _CALL.match(line)
        if match is None or match.group(2) not in TRACED:
            continue
        call = Call(int(match.group(1)), match.group(2), match.group(3), _result(match.group(3)))
        if match.group(3).endswith("<unfinished ...>"):
            pending[call.task] = call
        found.append(call)
    return found


@dataclass
class SyscallCounts:
    fsync_driver: int = 0  # by the driver's own threads
    fsync_children: int = 0  # by the programs it ran (mkfs, losetup...)
    forks: int = 0  # new processes (a new thread is not a fork)
    threads: int = 0  # new threads of the driver
    programs: Counter[str] = field(default_factory=Counter)  # execve'd, by base name

    def programs_text(self) -> str:
        if not self.programs:
            return "none"
        return ", ".join(f"{name} x{n}" for name, n in sorted(self.programs.items()))


def parse_strace(text: str) -> SyscallCounts:
    """Count the calls in ``strace -f`` output (one "PID call(args) = result" per line).

    A task that ever calls execve is a child (a program the driver ran); every other task
    is one of the driver's threads. A clone is a fork unless its flags hold CLONE_THREAD."""
    found = calls(text)
    children = {call.task for call in found if call.name == "execve"}
    counts = SyscallCounts()
    for call in found:
        if call.name in SYNC_CALLS:
            if call.task in children:
                counts.fsync_children += 1
            else:
                counts.fsync_driver += 1
        elif call.name in FORK_CALLS:
            if call.name.startswith("clone") and "CLONE_THREAD" in call.arguments:
                counts.threads += 1
            else:
                counts.forks += 1
        elif call.name == "execve" and call.result == "0":  # failures: the search of PATH
            program = _EXEC_PROGRAM.match(call.arguments)
            counts.programs[Path(program.group(1)).name if program else "?"] += 1
    return counts


def _all_traced(pid: int) -> bool:
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    for task in tasks:
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
        tracer = next(line for line in status.splitlines() if line.startswith("TracerPid:"))
        if tracer.split()[1] == "0":
            return False
    return bool(tasks)


@contextmanager
def traced(pid: int, output: Path) -> Iterator[list[SyscallCounts]]:
    """Trace process ``pid`` (all its threads, and what it forks) for the body of the
    ``with``; the yielded list holds the counts once the block is left."""
    proc = subprocess.Popen(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "signal=none",
            "-e",
            "trace=" + ",".join(TRACED),
            "-o",
            str(output),
            "-p",
            str(pid),
        ],
        stderr=subprocess.DEVNULL,
    )
    result: list[SyscallCounts] = []
    try:
        deadline = time.monotonic() + 10
        while not _all_traced(pid):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"strace could not attach to process {pid}")
            time.sleep(0.01)
        yield result
    finally:
        proc.send_signal(signal.SIGINT)  # strace detaches and flushes its output
        proc.wait(timeout=30)
    result.append(parse_strace(output.read_text()))
