"""The driver's HTTP listeners (``/healthz`` and ``/metrics`` on TCP, the Docker plugin on a
unix socket), served by waitress with limits for every client, however hostile.

waitress reads requests without a thread per connection (a slow client costs one
descriptor, not a thread), caps the connections it holds (past ``connections`` it stops
accepting until one closes), bounds headers and bodies whatever their encoding (chunked
included: a bad or oversized chunk is refused), answers malformed requests with 400 itself
and hands only complete requests to a few worker threads. On top of its idle timeout, a
connection whose request has not fully arrived ``request_deadline`` seconds after it was
accepted is closed: a client trickling a byte every few seconds cannot hold a slot for
ever. Every listener's numbers are in ``Limits``, one per listener, declared where it is
built.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server
from waitress.task import WSGITask

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Limits:
    connections: int  # connections held at once; more wait in the listen backlog
    threads: int  # requests served at once
    idle: float  # seconds a connection may stay silent
    request_deadline: float  # seconds from accept to a complete request
    header_bytes: int
    body_bytes: int


class _ClosingTask(WSGITask):
    """A reply, then the connection closed (``Connection: close`` on the wire): a client never
    reuses a connection the listener may have dropped meanwhile, and holds no slot idle."""

    def build_response_header(self) -> bytes:
        self.set_close_on_finish()
        return super().build_response_header()


class _ClosingChannel(HTTPChannel):
    task_class = _ClosingTask


class HttpListener:
    """``app`` served on the bound, listening socket ``sock`` from ``start`` to ``stop``."""

    def __init__(self, app: WsgiApp, sock: socket.socket, limits: Limits, name: str) -> None:
        self.name = name
        self.limits = limits
        self._map: dict[int, Any] = {}  # every socket of this listener (waitress's asyncore map)
        self._server = create_server(
            app,
            map=self._map,
            sockets=[sock],
            threads=limits.threads,
            connection_limit=limits.connections,
            channel_timeout=limits.idle,
            cleanup_interval=max(0.5, min(limits.idle, limits.request_deadline) / 4),
            max_request_header_size=limits.header_bytes,
            max_request_body_size=limits.body_bytes,
            asyncore_use_poll=True,  # select() fails past 1024 descriptors
            # Whole seconds: waitress reads it as an int, so 0.2 would be 0, a busy loop.
            asyncore_loop_timeout=1,
            expose_tracebacks=False,
            ident=None,
        )
        assert isinstance(self._server, BaseWSGIServer)
        self._server.channel_class = _ClosingChannel
        deadline = limits.request_deadline
        server = self._server

        def maintenance(now: float) -> None:
            # waitress's own rule (idle past channel_timeout) and ours: a request still
            # arriving past its deadline. A request being served is never cut.
            idle_cutoff, arrival_cutoff = now - limits.idle, now - deadline
            # (types-waitress calls active_channels one channel; it is fileno -> channel)
            channels = cast(dict[int, HTTPChannel], server.active_channels)
            for channel in list(channels.values()):
                if channel.requests:
                    continue
                if channel.last_activity < idle_cutoff or channel.creation_time < arrival_cutoff:
                    channel.will_close = True

        server.maintenance = maintenance  # type: ignore[method-assign,unused-ignore]
        self._thread: threading.Thread | None = None

    @property
    def server(self) -> BaseWSGIServer | MultiSocketServer:
        return self._server

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server = self._server
        for channel in list(self._map.values()):
            if channel is not server:
                channel.close()
        server.close()
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                log.warning("event=listener_not_stopped listener=%s", self.name)


def respond(
    start_response: Callable[..., Any], status: int, phrase: str, body: bytes, content_type: str
) -> list[bytes]:
    """A whole reply: status, its length and type (the connection closes after it)."""
    start_response(
        f"{status} {phrase}",
        [("Content-Type", content_type), ("Content-Length", str(len(body)))],
    )
    return [body]
