"""The Docker volume-plugin protocol (JSON over HTTP on a unix socket), for Docker and Podman.

Each call is a POST of a JSON object to ``/Plugin.Activate`` or ``/VolumeDriver.<Call>``,
answered with a JSON object. Success is HTTP 200 and nothing else: Podman reads a 200 whose
body carries ``Err`` as success, so every failure is a non-200 status with ``{"Err": ...}``,
its status chosen by the one table below (``STATUS_OF``, the counterpart of csi.status for
gRPC). A reply is sent whole, status line, headers (with Content-Length) and body in one
write, and the connection closed after it: Podman stops reading once it has the status.

Every call answers within ``BUDGET`` seconds (Podman gives up at 5): the work runs in a
thread of its own, and one still running when the budget is spent goes on in the background
(it finishes or rolls back on its own, holding the volume's lock) while the caller is told
to retry; a retried Create then finds the volume made. Calls wait for start-up
reconciliation within the same budget. The server runs in threads of its own, as /healthz
does (csi.health), so it never holds up a CSI call. What each call means for a volume is
csi.volumes.named's.
"""

from __future__ import annotations

import errno
import json
import logging
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import MappingProxyType
from typing import Any

from csi import errors
from csi.endpoints import bound_privately
from csi.host import errors as host
from csi.readiness import Readiness
from csi.volumes.named import NamedVolumes, describe

log = logging.getLogger(__name__)

BUDGET = 4.0  # seconds a call may take before its caller hears back
REQUEST_TIMEOUT = 5.0  # a client that sends nothing is dropped
MAX_BODY = 64 * 1024
CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"

STATUS_OF: Mapping[type[BaseException], HTTPStatus] = MappingProxyType(
    {
        errors.InvalidArgument: HTTPStatus.BAD_REQUEST,
        errors.NotFound: HTTPStatus.NOT_FOUND,
        errors.AlreadyExists: HTTPStatus.CONFLICT,
        errors.FailedPrecondition: HTTPStatus.CONFLICT,
        errors.Aborted: HTTPStatus.CONFLICT,
        errors.OutOfRange: HTTPStatus.BAD_REQUEST,
        errors.ResourceExhausted: HTTPStatus.INSUFFICIENT_STORAGE,
        errors.Unavailable: HTTPStatus.SERVICE_UNAVAILABLE,
        errors.Internal: HTTPStatus.INTERNAL_SERVER_ERROR,
        errors.CsiError: HTTPStatus.INTERNAL_SERVER_ERROR,
        host.CommandFailed: HTTPStatus.INTERNAL_SERVER_ERROR,
        host.NoSpace: HTTPStatus.INSUFFICIENT_STORAGE,
        host.ToolMissing: HTTPStatus.INTERNAL_SERVER_ERROR,
        host.CommandTimedOut: HTTPStatus.GATEWAY_TIMEOUT,
        host.DeadlineReached: HTTPStatus.GATEWAY_TIMEOUT,
        host.CommandError: HTTPStatus.INTERNAL_SERVER_ERROR,
        host.LoopDeviceUnreadable: HTTPStatus.INTERNAL_SERVER_ERROR,
        host.FormatRefused: HTTPStatus.CONFLICT,
        host.UnsupportedFilesystem: HTTPStatus.CONFLICT,
        host.GrowNeedsPrivilege: HTTPStatus.CONFLICT,
        host.KeyMismatch: HTTPStatus.CONFLICT,
        host.HostError: HTTPStatus.INTERNAL_SERVER_ERROR,
        NotImplementedError: HTTPStatus.NOT_IMPLEMENTED,
    }
)
NO_SPACE = "no space left in the driver's data directory"
ERRNO_STATUS: Mapping[int, HTTPStatus] = MappingProxyType(
    {errno.ENOSPC: HTTPStatus.INSUFFICIENT_STORAGE, errno.EDQUOT: HTTPStatus.INSUFFICIENT_STORAGE}
)


class BadRequest(Exception):
    """The HTTP request itself is unusable (not JSON, too large, no such call): the
    protocol's own refusal, with the status it is answered with."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def failure_of(exc: BaseException) -> tuple[HTTPStatus, str, str | None]:
    """The status and message for ``exc``; a reference (third) when it was unexpected."""
    if isinstance(exc, BadRequest):
        return exc.status, exc.message, None
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in ERRNO_STATUS:
        return ERRNO_STATUS[exc.errno], NO_SPACE, None
    for cls in type(exc).__mro__:
        status = STATUS_OF.get(cls)
        if status is None:
            continue
        if isinstance(exc, errors.CsiError | host.HostError):
            return status, exc.message, None
        return status, "not implemented", None
    ref = uuid.uuid4().hex[:12]
    return HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error (ref {ref}); see driver log", ref


# -- the calls ---------------------------------------------------------------------------
Call = Callable[[NamedVolumes, dict[str, Any]], dict[str, Any]]


def _name(body: dict[str, Any]) -> str:
    name = body.get("Name")
    if not isinstance(name, str) or not name:
        raise errors.InvalidArgument("Name is required")
    return name


def _create(named: NamedVolumes, body: dict[str, Any]) -> dict[str, Any]:
    named.create(_name(body), body.get("Opts"))
    return {"Err": ""}


def _remove(named: NamedVolumes, body: dict[str, Any]) -> dict[str, Any]:
    named.remove(_name(body))
    return {"Err": ""}


def _mount(named: NamedVolumes, body: dict[str, Any]) -> dict[str, Any]:
    return {"Mountpoint": named.mount(_name(body), body.get("ID")), "Err": ""}


def _unmount(named: NamedVolumes, body: dict[str, Any]) -> dict[str, Any]:
    named.unmount(_name(body), body.get("ID"))
    return {"Err": ""}


def _path(named: NamedVolumes, body: dict[str, Any]) -> dict[str, Any]:
    return {"Mountpoint": named.path(_name(body)), "Err": ""}


def _get(named: NamedVolumes, body: dict[str, Any]) -> dict[str, Any]:
    return {"Volume": describe(named.get(_name(body))), "Err": ""}


def _list(named: NamedVolumes, body: dict[str, Any]) -> dict[str, Any]:
    return {"Volumes": [describe(v) for v in named.list_volumes()], "Err": ""}


# Answered at once, before reconciliation too: what the plugin is, not what it holds.
STATIC: Mapping[str, dict[str, Any]] = MappingProxyType(
    {
        "/Plugin.Activate": {"Implements": ["VolumeDriver"]},
        "/VolumeDriver.Capabilities": {"Capabilities": {"Scope": "local"}},
    }
)
CALLS: Mapping[str, Call] = MappingProxyType(
    {
        "/VolumeDriver.Create": _create,
        "/VolumeDriver.Remove": _remove,
        "/VolumeDriver.Mount": _mount,
        "/VolumeDriver.Unmount": _unmount,
        "/VolumeDriver.Path": _path,
        "/VolumeDriver.Get": _get,
        "/VolumeDriver.List": _list,
    }
)


class _Outcome:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.abandoned = False  # the caller was answered before the work finished
        self.reply: dict[str, Any] | None = None
        self.error: BaseException | None = None


def bounded(work: Callable[[], dict[str, Any]], budget: float, what: str) -> dict[str, Any]:
    """``work()``'s reply if it finishes within ``budget``; UNAVAILABLE (it goes on) if not."""
    outcome = _Outcome()

    def run() -> None:
        try:
            outcome.reply = work()
        except BaseException as exc:
            outcome.error = exc
        with outcome.lock:
            outcome.done.set()
            late = outcome.abandoned
        if late:
            error = outcome.error
            status = "ok" if error is None else failure_of(error)[1]
            log.info("event=docker_call_finished_late call=%s outcome=%r", what, status)

    threading.Thread(target=run, name="docker-call", daemon=True).start()
    if not outcome.done.wait(budget):
        with outcome.lock:
            outcome.abandoned = not outcome.done.is_set()
        if outcome.abandoned:
            raise errors.Unavailable(
                f"{what} did not finish within {budget:g} s; it goes on in the background, retry"
            )
    if outcome.error is not None:
        raise outcome.error
    assert outcome.reply is not None
    return outcome.reply


# -- HTTP --------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT

    def do_POST(self) -> None:
        started = time.monotonic()
        call = self.path.split("?", 1)[0]
        status, reply = HTTPStatus.OK, {}
        name = ""
        try:
            body = self._body()
            name = str(body.get("Name", ""))[:128]
            reply = self._dispatch(call, body)
        except Exception as exc:
            status, message, ref = failure_of(exc)
            reply = {"Err": message}
            if ref is not None:
                log.error("event=docker_call_failed call=%s ref=%s", call, ref, exc_info=exc)
        self._send(status, reply)
        log.info(
            "event=docker_call call=%s name=%r status=%d duration_ms=%d%s",
            call,
            name,
            status,
            (time.monotonic() - started) * 1000,
            f" error={reply['Err']!r}" if status != HTTPStatus.OK else "",
        )

    def _dispatch(self, call: str, body: dict[str, Any]) -> dict[str, Any]:
        static = STATIC.get(call)
        if static is not None:
            return dict(static)
        handler = CALLS.get(call)
        if handler is None:
            raise BadRequest(f"no such call: {call[:64]}", HTTPStatus.NOT_FOUND)
        server = self.server
        budget = server.budget

        def work() -> dict[str, Any]:
            server.readiness.require(timeout=budget * 0.75)
            return handler(server.named, body)

        return bounded(work, budget, call.removeprefix("/VolumeDriver."))

    def _body(self) -> dict[str, Any]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = self._read_chunked()
        else:
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                raise BadRequest("Content-Length is not a number") from None
            if length < 0 or length > MAX_BODY:
                raise BadRequest("request body too large", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            raw = self.rfile.read(length)
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("request body is not JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return body

    def _read_chunked(self) -> bytes:
        data = b""
        while True:
            line = self.rfile.readline(64)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest("malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return data
            if len(data) + size > MAX_BODY:
                raise BadRequest("request body too large", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            data += self.rfile.read(size)
            self.rfile.readline(8)

    def _refuse_method(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"Err": "the plugin protocol takes POST only"})

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _refuse_method

    def _send(self, status: HTTPStatus, reply: Mapping[str, Any]) -> None:
        body = json.dumps(reply, separators=(",", ":")).encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            f"Content-Type: {CONTENT_TYPE}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")
        self.close_connection = True
        try:
            self.wfile.write(head + body)  # one write: the reply arrives whole or not at all
        except OSError as exc:
            log.info("event=docker_reply_not_delivered error=%s", exc.strerror)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("event=docker_request %s", format % args)


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(
        self, path: Path, named: NamedVolumes, readiness: Readiness, budget: float
    ) -> None:
        self.named = named
        self.readiness = readiness
        self.budget = budget
        super().__init__(str(path), _Handler)


class DockerPlugin:
    """The protocol on ``socket_path``, served from ``start`` until ``stop`` (which removes
    the socket)."""

    def __init__(
        self,
        socket_path: Path,
        named: NamedVolumes,
        readiness: Readiness,
        budget: float = BUDGET,
    ) -> None:
        self.socket_path = socket_path
        self.named = named
        self._readiness = readiness
        self._budget = budget
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        assert self._server is None, "docker plugin already started"
        path = self.socket_path
        with bound_privately(path):  # root's alone from the first instant: it makes volumes
            server = _Server(path, self.named, self._readiness, self._budget)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="docker", daemon=True
        )
        self._thread.start()
        log.info("event=docker_plugin_serving socket=%s", path)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.socket_path.unlink(missing_ok=True)
