"""HTTP ``/healthz`` for the kubelet's probes, in place of a livenessprobe container, and
``/metrics`` for Prometheus.

Healthy (200) when the Identity Probe would answer ready (the one rule in readiness.py)
and, with kubelet registration on, the kubelet accepted the driver; otherwise 503 with a
one-line reason. The server runs in threads of its own, so it never holds up a CSI call,
and each check is bounded: a check still running when the timeout is up answers 503.
``/metrics`` answers with the registry the server was given (csi.metrics), in the text
format or OpenMetrics as the scraper's Accept header asks, whether or not the driver is
ready: a driver that never gets ready is exactly the one to look at.
"""

from __future__ import annotations

import errno
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from csi.config import HostPort
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


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == METRICS_PATH and self.server.registry is not None:
            self._metrics(self.server.registry, body)
            return
        if path != PATH:
            self._send(404, "not found", body)
            return
        problem = self.server.probe()
        if problem is None:
            self._send(200, "ok", body)
        else:
            self._send(503, problem, body)

    def _metrics(self, registry: CollectorRegistry, body: bool) -> None:
        encode, content_type = choose_encoder(self.headers.get("Accept", ""))
        data = encode(registry)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _send(self, code: int, text: str, body: bool) -> None:
        data = (" ".join(text.split()) + "\n").encode("utf-8", "replace")
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("event=health_request %s", format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: HostPort,
        check: BoundedCheck,
        family: socket.AddressFamily,
        registry: CollectorRegistry | None,
    ) -> None:
        self.address_family = family
        self._check = check
        self.registry = registry
        self._lock = threading.Lock()
        self._last: str | None = ""  # "" until the first answer
        host = "::" if family == socket.AF_INET6 and not address.host else address.host
        super().__init__((host, address.port), _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.server_address[0] == "::":
            # Every interface means IPv4 and IPv6 alike, as a Go sidecar's ":9808" would.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # Not HTTPServer.server_bind: its reverse lookup of the host can hang without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

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
        self._check = BoundedCheck(check, timeout)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the kernel's pick for port 0)."""
        assert self._server is not None, "health server not started"
        return int(self._server.server_address[1])

    def start(self) -> None:
        assert self._server is None, "health server already started"
        server = self._bind()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="health", daemon=True
        )
        self._thread.start()
        log.info(
            "event=health_serving address=%s path=%s", HostPort(self._address.host, self.port), PATH
        )

    def _bind(self) -> _Server:
        host = self._address.host
        if ":" in host:
            return _Server(self._address, self._check, socket.AF_INET6, self._registry)
        if host:
            return _Server(self._address, self._check, socket.AF_INET, self._registry)
        try:  # every interface: dual-stack where the node has IPv6, IPv4 otherwise
            return _Server(self._address, self._check, socket.AF_INET6, self._registry)
        except OSError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
            return _Server(self._address, self._check, socket.AF_INET, self._registry)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
