"""csi.http_listener: an idle listener waits in the kernel, it does not spin (counted, not
timed: the number of times its loop polls while nothing happens)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from waitress import wasyncore

from csi.health import LIMITS
from csi.http_listener import HttpListener


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def test_an_idle_listener_polls_about_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    polls = 0
    real = wasyncore.poll2

    def counted(timeout: float = 0.0, map: Any = None) -> None:
        nonlocal polls
        polls += 1
        real(timeout, map)

    monkeypatch.setattr(wasyncore, "poll2", counted)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    listener = HttpListener(_app, sock, LIMITS, "idle-test")
    listener.start()
    try:
        time.sleep(0.5)
        before = polls
        time.sleep(2)
        idle_polls = polls - before
    finally:
        listener.stop()
    # Its loop wakes once a second (and for its clean-up); a spinning loop polls thousands of times.
    assert idle_polls <= 10, f"{idle_polls} polls in 2 s of nothing"
