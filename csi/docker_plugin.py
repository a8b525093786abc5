"""The Docker volume-plugin protocol (JSON over HTTP on a unix socket), for Docker and Podman.

Each call is a POST of a JSON object to ``/Plugin.Activate`` or ``/VolumeDriver.<Call>``,
answered with a JSON object. Success is HTTP 200 and nothing else: Podman reads a 200 whose
body carries ``Err`` as success, so every failure is a non-200 status with ``{"Err": ...}``,
its status chosen by the one table below (``STATUS_OF``, the counterpart of csi.status for
gRPC). A reply is sent whole, with its Content-Length, and the connection closed after it:
Podman stops reading once it has the status. The socket is served by waitress within
``LIMITS`` (csi.http_listener): connections, time per request, header and body sizes however
encoded; a request that is not one JSON object is 400, never a traceback.

Every call answers within ``BUDGET`` seconds (Podman gives up at 5): the work runs in a
thread of its own, and one still running when the budget is spent goes on in the background
(it finishes or rolls back on its own, holding the volume's lock) while the caller is told
to retry; a retried Create then finds the volume made. A Mount is the exception that must
not finish unseen: its caller, told it failed, would never unmount, so a Mount past the
budget is undone before it lets go of the volume (``commit``: the work's last step and the
caller's giving up are decided under one lock, so exactly one of them happens). Docker and
Podman never retry a plugin call, so a call on a volume another call holds waits its turn,
within the budget, rather than be refused. Calls wait for start-up reconciliation within
the same budget. The server runs in threads of its own, as /healthz
does (csi.health), so it never holds up a CSI call. What each call means for a volume is
csi.volumes.named's.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from types import MappingProxyType
from typing import Any

from csi import errors
from csi.endpoints import bound_privately
from csi.host import errors as host
from csi.http_listener import HttpListener, Limits, respond
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
    if isinstance(exc, host.SyscallFailed) and exc.errno in ERRNO_STATUS:
        return ERRNO_STATUS[exc.errno], exc.message, None  # a clone, a key or mount limit
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
Commit = Callable[[], bool]
Call = Callable[[NamedVolumes, dict[str, Any], Commit], dict[str, Any]]


def _name(body: dict[str, Any]) -> str:
    name = body.get("Name")
    if not isinstance(name, str) or not name:
        raise errors.InvalidArgument("Name is required")
    return name


def _create(named: NamedVolumes, body: dict[str, Any], _: Commit) -> dict[str, Any]:
    named.create(_name(body), body.get("Opts"))
    return {"Err": ""}


def _remove(named: NamedVolumes, body: dict[str, Any], _: Commit) -> dict[str, Any]:
    named.remove(_name(body))
    return {"Err": ""}


def _mount(named: NamedVolumes, body: dict[str, Any], commit: Commit) -> dict[str, Any]:
    return {"Mountpoint": named.mount(_name(body), body.get("ID"), commit), "Err": ""}


def _unmount(named: NamedVolumes, body: dict[str, Any], _: Commit) -> dict[str, Any]:
    named.unmount(_name(body), body.get("ID"))
    return {"Err": ""}


def _path(named: NamedVolumes, body: dict[str, Any], _: Commit) -> dict[str, Any]:
    return {"Mountpoint": named.path(_name(body)), "Err": ""}


def _get(named: NamedVolumes, body: dict[str, Any], _: Commit) -> dict[str, Any]:
    return {"Volume": describe(named.get(_name(body))), "Err": ""}


def _list(named: NamedVolumes, body: dict[str, Any], _: Commit) -> dict[str, Any]:
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
        self.committed = False  # the work passed its point of no return: the caller waits
        self.reply: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def commit(self) -> bool:
        """The work's last decision: True (the caller will be told the outcome) unless the
        caller was already told to retry, then False and the work must undo itself."""
        with self.lock:
            self.committed = not self.abandoned
            return self.committed


def bounded(work: Callable[[Commit], dict[str, Any]], budget: float, what: str) -> dict[str, Any]:
    """``work(commit)``'s reply if it finishes within ``budget``, or once it has committed;
    UNAVAILABLE if not (it goes on, or, past ``commit``, undoes itself)."""
    outcome = _Outcome()

    def run() -> None:
        try:
            outcome.reply = work(outcome.commit)
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
            outcome.abandoned = not outcome.done.is_set() and not outcome.committed
        if outcome.committed:
            outcome.done.wait()  # only the reply is left to make
        if outcome.abandoned:
            raise errors.Unavailable(
                f"{what} did not finish within {budget:g} s; it goes on in the background, retry"
            )
    if outcome.error is not None:
        raise outcome.error
    assert outcome.reply is not None
    return outcome.reply


# -- HTTP --------------------------------------------------------------------------------
# Docker and Podman on the node are the clients, as root; bounded all the same.
LIMITS = Limits(
    connections=64,
    threads=8,
    idle=REQUEST_TIMEOUT,
    request_deadline=2 * REQUEST_TIMEOUT,
    header_bytes=16 * 1024,
    body_bytes=MAX_BODY,
)


class _App:
    """The WSGI application: a POST of a JSON object to a call, answered by one JSON object."""

    def __init__(self, named: NamedVolumes, readiness: Readiness, budget: float) -> None:
        self.named = named
        self.readiness = readiness
        self.budget = budget

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        started = time.monotonic()
        call = environ.get("PATH_INFO", "")
        status, reply = HTTPStatus.OK, {}
        name = ""
        try:
            if environ.get("REQUEST_METHOD") != "POST":
                raise BadRequest(
                    "the plugin protocol takes POST only", HTTPStatus.METHOD_NOT_ALLOWED
                )
            body = _body(environ)
            name = str(body.get("Name", ""))[:128]
            reply = self._dispatch(call, body)
        except Exception as exc:
            status, message, ref = failure_of(exc)
            reply = {"Err": message}
            if ref is not None:
                log.error("event=docker_call_failed call=%s ref=%s", call[:64], ref, exc_info=exc)
        log.info(
            "event=docker_call call=%s name=%r status=%d duration_ms=%d%s",
            call[:64],
            name,
            status,
            (time.monotonic() - started) * 1000,
            f" error={reply['Err']!r}" if status != HTTPStatus.OK else "",
        )
        data = json.dumps(reply, separators=(",", ":")).encode()
        return respond(start_response, status.value, status.phrase, data, CONTENT_TYPE)

    def _dispatch(self, call: str, body: dict[str, Any]) -> dict[str, Any]:
        static = STATIC.get(call)
        if static is not None:
            return dict(static)
        handler = CALLS.get(call)
        if handler is None:
            raise BadRequest(f"no such call: {call[:64]}", HTTPStatus.NOT_FOUND)
        budget = self.budget

        def work(commit: Commit) -> dict[str, Any]:
            self.readiness.require(timeout=budget * 0.75)
            return handler(self.named, body, commit)

        return bounded(work, budget, call.removeprefix("/VolumeDriver."))


def _body(environ: dict[str, Any]) -> dict[str, Any]:
    """The request's JSON object. waitress has read the body whole, within LIMITS, however
    it was encoded; a body that is not one JSON object (too deep, not UTF-8...) is 400."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadRequest("Content-Length is not a number") from None
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


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
        self._listener: HttpListener | None = None

    def start(self) -> None:
        assert self._listener is None, "docker plugin already started"
        path = self.socket_path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with bound_privately(path):  # root's alone from the first instant: it makes volumes
                sock.bind(str(path))
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        app = _App(self.named, self._readiness, self._budget)
        self._listener = HttpListener(app, sock, LIMITS, "docker")
        self._listener.start()
        log.info("event=docker_plugin_serving socket=%s", path)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.stop()
        self.socket_path.unlink(missing_ok=True)
