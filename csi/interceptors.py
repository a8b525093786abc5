"""The one place every RPC passes: readiness gate, error -> status, timing and logging."""

from __future__ import annotations

import errno
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from csi.errors import CsiError
from csi.readiness import Readiness
from csi.redact import safe_text

log = logging.getLogger("csi.rpc")

# Answered while the driver reconciles: who it is, whether it is ready, and the kubelet's
# registration (which must not wait for reconciliation).
UNGATED_SERVICES = ("/csi.v1.Identity/", "/pluginregistration.Registration/")
# Polled often by sidecars; logged at debug level when they succeed.
QUIET_METHODS = frozenset(
    {
        "Probe",
        "GetPluginInfo",
        "GetPluginCapabilities",
        "ControllerGetCapabilities",
        "NodeGetCapabilities",
        "NodeGetInfo",
        "GetCapacity",
    }
)


MAX_MESSAGE = 1024  # status messages echo request fields; keep them well inside gRPC limits


def _bounded(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


class RpcInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, readiness: Readiness) -> None:
        self._readiness = readiness

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        full_method: str = handler_call_details.method
        gated = not full_method.startswith(UNGATED_SERVICES)
        behaviour = self._wrap(handler.unary_unary, full_method.rsplit("/", 1)[-1], gated)
        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap(
        self, inner: Callable[[Any, grpc.ServicerContext], Any], method: str, gated: bool
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        readiness = self._readiness

        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            volume_id = getattr(request, "volume_id", "")
            name = getattr(request, "name", "")
            if log.isEnabledFor(logging.DEBUG):
                log.debug("event=rpc_request method=%s request=%r", method, safe_text(request))
            failure: tuple[grpc.StatusCode, str] | None = None
            try:
                if gated:
                    readiness.require()
                response = inner(request, context)
            except CsiError as exc:
                failure = (exc.code, exc.message)
            except NotImplementedError:
                failure = (grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented")
            except OSError as exc:
                failure = self._os_failure(exc, method, volume_id)
            except Exception as exc:
                failure = self._internal(exc, method, volume_id)
            code = failure[0] if failure else grpc.StatusCode.OK
            elapsed_ms = (time.perf_counter() - started) * 1000
            if code is not grpc.StatusCode.OK:
                level = logging.WARNING
            else:
                level = logging.DEBUG if method in QUIET_METHODS else logging.INFO
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "event=rpc method=%s volume=%s%s code=%s duration_ms=%.2f%s",
                    method,
                    volume_id or "-",
                    f" name={name!r}" if name else "",
                    code.name,
                    elapsed_ms,
                    f" message={failure[1]!r}" if failure else "",
                )
            if failure is not None:
                context.abort(failure[0], _bounded(failure[1]))
            return response

        return behaviour

    @staticmethod
    def _os_failure(exc: OSError, method: str, volume_id: str) -> tuple[grpc.StatusCode, str]:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "no space left in the driver's data directory",
            )
        return RpcInterceptor._internal(exc, method, volume_id)

    @staticmethod
    def _internal(exc: Exception, method: str, volume_id: str) -> tuple[grpc.StatusCode, str]:
        """INTERNAL for the caller; the traceback only in the log, under a reference."""
        ref = uuid.uuid4().hex[:12]
        log.error(
            "event=rpc_internal_error method=%s volume=%s ref=%s error=%s",
            method,
            volume_id,
            ref,
            type(exc).__name__,
            exc_info=True,
        )
        return grpc.StatusCode.INTERNAL, f"internal error (ref {ref}); see driver log"
