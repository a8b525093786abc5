"""The driver's SIGTERM/SIGINT handler takes no lock: it runs in the main thread between two
bytecodes, so a handler that took a lock the main thread held at that moment (an Event's,
a logging handler's) waited for itself for ever, and every later signal was ignored."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

from csi.server import StopRequest


def c_calls_of(call: Any) -> list[str]:
    """The names of the C functions ``call()`` runs (lock acquisitions among them)."""
    seen: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "c_call":
            seen.append(getattr(arg, "__name__", repr(arg)))

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return seen


def test_the_handler_only_notes_the_signal() -> None:
    request = StopRequest()
    calls = c_calls_of(lambda: request.on_signal(signal.SIGTERM, None))
    assert not [c for c in calls if "acquire" in c or c == "__enter__"], calls
    assert request.signum == signal.SIGTERM


def test_the_check_sees_a_lock_taken() -> None:
    """What the handler used to do (Event.set) shows up as an acquisition."""
    calls = c_calls_of(threading.Event().set)
    assert [c for c in calls if "acquire" in c or c == "__enter__"]


def test_wait_returns_once_a_signal_is_noted() -> None:
    request = StopRequest()
    timer = threading.Timer(0.1, request.on_signal, (signal.SIGINT, None))
    timer.start()
    request.wait()
    assert request.signum == signal.SIGINT
