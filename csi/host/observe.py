"""How each forked command ended, told to whoever listens (csi.metrics counts them).

The host layer reports in its own terms, a tool's name, an outcome and the seconds it
ran, and knows nothing of who listens: the listeners are added once, by the driver's
metrics, to the one ``COMMANDS`` of the process (every command a process forks runs on
the same host). A listener must be quick and must not raise.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

from csi.host.errors import CommandFailed, CommandTimedOut, DeadlineReached, NoSpace, ToolMissing

OK = "ok"
FAILED = "failed"  # ran and exited with a code the caller did not accept
NO_SPACE = "no_space"  # failed that way because the disk was full
MISSING = "missing"  # the program is not installed
TIMED_OUT = "timed_out"  # killed at its own cap
DEADLINE = "deadline"  # killed at the RPC's deadline
ERROR = "error"  # could not be run for another reason (e.g. an OSError from fork)
OUTCOMES = (OK, FAILED, NO_SPACE, MISSING, TIMED_OUT, DEADLINE, ERROR)

Listener = Callable[[str, str, float], None]  # (tool, outcome, seconds)
P = ParamSpec("P")
T = TypeVar("T")


class Observers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: tuple[Listener, ...] = ()

    def add(self, listener: Listener) -> None:
        """Listen from now on (adding the same listener again changes nothing)."""
        with self._lock:
            if listener not in self._listeners:
                self._listeners = (*self._listeners, listener)

    def notify(self, tool: str, outcome: str, seconds: float) -> None:
        for listener in self._listeners:
            listener(tool, outcome, seconds)


COMMANDS = Observers()


def outcome_of(exc: BaseException | None) -> str:
    if exc is None:
        return OK
    for kind, outcome in (
        (ToolMissing, MISSING),
        (DeadlineReached, DEADLINE),
        (CommandTimedOut, TIMED_OUT),
        (NoSpace, NO_SPACE),
        (CommandFailed, FAILED),
    ):
        if isinstance(exc, kind):
            return outcome
    return ERROR


def observed(run: Callable[P, T], observers: Observers = COMMANDS) -> Callable[P, T]:
    """Decorates ``run(argv, ...)``: each call is told by ``argv[0]`` and its outcome. A
    call refused before anything forks (ValueError: a tool not declared) is no command."""

    @functools.wraps(run)
    def told(*args: P.args, **kwargs: P.kwargs) -> T:
        argv = args[0] if args else kwargs.get("argv")
        tool = str(argv[0]) if isinstance(argv, Sequence) and argv else "?"
        started = time.monotonic()
        try:
            result = run(*args, **kwargs)
        except ValueError:
            raise
        except BaseException as exc:
            observers.notify(tool, outcome_of(exc), time.monotonic() - started)
            raise
        observers.notify(tool, OK, time.monotonic() - started)
        return result

    return told
