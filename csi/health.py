"""HTTP ``/healthz`` for the kubelet's probes, in place of a livenessprobe container, and
``/metrics`` for Prometheus.

Healthy (200) when the Identity Probe would answer ready (the one rule in readiness.py)
and, with kubelet registration on, the kubelet accepted the driver; otherwise 503 with a
one-line reason. The server runs in threads of its own, so it never holds up a CSI call,
and each check is bounded: a check still running when the timeout is up answers 503.
``/metrics`` answers with the registry the server was given (csi.metrics), in the text
format or OpenMetrics as the scraper's Accept header asks, whether or not the driver is
ready: a driver that never gets ready is exactly the one to look at. The port is reachable
from every pod on the node, so it is served within fixed limits (``LIMITS``,
csi.http_listener): connections, time per request, header and body sizes.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from csi.config import HostPort
from csi.http_listener import HttpListener, Limits, respond
from csi.readiness import Readiness, not_ready
from csi.registration import RegistrationState

log = logging.getLogger(__name__)

PATH = "/healthz"
METRICS_PATH = "/metrics"
CHECK_TIMEOUT = 3.0  # well inside the probes' timeoutSeconds (5 in the DaemonSet)
REQUEST_TIMEOUT = 10.0  # a client that sends nothing gets dropped
Check = Callable[[], str | None]  # the reason the driver is unhealthy, or None


class HealthRule:
    """Ready as Probe means it, and registered when registration is on."""

    def __init__(
        self, readiness: Readiness, data_dir: Path, registration: RegistrationState | None
    ) -> None:
        self._readiness = readiness
        self._data_dir = data_dir
        self._registration = registration

    def __call__(self) -> str | None:
        problem = not_ready(self._readiness, self._data_dir)
        if problem or self._registration is None:
            return problem
        return self._registration.status.problem


class _Run:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: str | None = None


class BoundedCheck:
    """Runs ``check`` in a thread of its own and waits at most ``timeout`` for it. Callers
    arriving while a run is under way share it, so a stuck check holds one thread, not one
    per probe."""

    def __init__(self, check: Check, timeout: float = CHECK_TIMEOUT) -> None:
        self._check = check
        self._timeout = timeout
        self._lock = threading.Lock()
        self._running: _Run | None = None

    def __call__(self) -> str | None:
        with self._lock:
            run = self._running
            if run is None:
                run = self._running = _Run()
                threading.Thread(
                    target=self._run, args=(run,), name="health-check", daemon=True
                ).start()
        if not run.done.wait(self._timeout):
            return f"health check did not finish within {self._timeout:g} s"
        return run.result

    def _run(self, run: _Run) -> None:
        try:
            run.result = self._check()
        except Exception as exc:
            log.exception("event=health_check_failed")
            run.result = f"health check failed: {type(exc).__name__}"
        finally:
            with self._lock:
                self._running = None
            run.done.set()


# /healthz and /metrics are reachable from every pod on the node: bounded for any client.
LIMITS = Limits(
    connections=64,
    threads=4,
    idle=5.0,
    request_deadline=REQUEST_TIMEOUT,
    header_bytes=8 * 1024,
    body_bytes=1024,
)


class _App:
    """The WSGI application: GET or HEAD of /healthz or /metrics."""

    def __init__(self, check: BoundedCheck, registry: CollectorRegistry | None) -> None:
        self._check = check
        self.registry = registry
        self._lock = threading.Lock()
        self._last: str | None = ""  # "" until the first answer

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        if method not in ("GET", "HEAD"):
            return self._text(start_response, 405, "method not allowed", method)
        path = environ.get("PATH_INFO", "")
        if path == METRICS_PATH and self.registry is not None:
            encode, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
            body = encode(self.registry)
            return _head_only(method, respond(start_response, 200, "OK", body, content_type))
        if path != PATH:
            return self._text(start_response, 404, "not found", method)
        problem = self.probe()
        if problem is None:
            return self._text(start_response, 200, "ok", method)
        return self._text(start_response, 503, problem, method)

    @staticmethod
    def _text(start_response: Callable[..., Any], code: int, text: str, method: str) -> list[bytes]:
        body = (" ".join(text.split()) + "\n").encode("utf-8", "replace")
        phrase = HTTPStatus(code).phrase
        reply = respond(start_response, code, phrase, body, "text/plain; charset=utf-8")
        return _head_only(method, reply)

    def probe(self) -> str | None:
        problem = self._check()
        with self._lock:
            changed, self._last = problem != self._last, problem
        if changed:
            if problem is None:
                log.info("event=healthy")
            else:
                log.warning("event=unhealthy reason=%r", problem)
        return problem


def _head_only(method: str, reply: list[bytes]) -> list[bytes]:
    return [] if method == "HEAD" else reply


def _listening(address: HostPort, family: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        host = address.host
        if family == socket.AF_INET6 and not host:
            # Every interface means IPv4 and IPv6 alike, as a Go sidecar's ":9808" would.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            host = "::"
        sock.bind((host, address.port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


class HealthServer:
    """``/healthz`` (and ``/metrics`` given a registry) on ``address``, served from
    ``start`` until ``stop``."""

    def __init__(
        self,
        address: HostPort,
        check: Check,
        timeout: float = CHECK_TIMEOUT,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._address = address
        self._registry = registry
        self._app = _App(BoundedCheck(check, timeout), registry)
        self._listener: HttpListener | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the kernel's pick for port 0)."""
        assert self._listener is not None, "health server not started"
        return self._port

    def start(self) -> None:
        assert self._listener is None, "health server already started"
        sock = self._bind()
        self._port = int(sock.getsockname()[1])
        self._listener = HttpListener(self._app, sock, LIMITS, "health")
        self._listener.start()
        log.info(
            "event=health_serving address=%s path=%s", HostPort(self._address.host, self.port), PATH
        )

    def _bind(self) -> socket.socket:
        host = self._address.host
        if ":" in host:
            return _listening(self._address, socket.AF_INET6)
        if host:
            return _listening(self._address, socket.AF_INET)
        try:  # every interface: dual-stack where the node has IPv6, IPv4 otherwise
            return _listening(self._address, socket.AF_INET6)
        except OSError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
            return _listening(self._address, socket.AF_INET)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
