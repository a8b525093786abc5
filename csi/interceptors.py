"""The one place every RPC passes: readiness gate, the call's deadline for host commands,
error -> status (through ``csi.status``), timing and logging."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from csi.host.deadline import call_deadline
from csi.metrics import RpcMetrics
from csi.readiness import Readiness
from csi.redact import safe_text
from csi.status import Failure, failure_of

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
    def __init__(self, readiness: Readiness, metrics: RpcMetrics | None = None) -> None:
        self._readiness = readiness
        self._metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        full_method: str = handler_call_details.method
        gated = not full_method.startswith(UNGATED_SERVICES)
        if handler.unary_stream is not None:
            # SnapshotMetadata streams: the whole answer is made (and any error raised)
            # inside the wrapped call, then sent.
            stream = handler.unary_stream
            listed = self._wrap(
                lambda request, context: list(stream(request, context)),
                full_method.rsplit("/", 1)[-1],
                gated,
            )
            return grpc.unary_stream_rpc_method_handler(
                lambda request, context: iter(listed(request, context)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_unary is None:
            return handler
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
        metrics = self._metrics

        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            volume_id = getattr(request, "volume_id", "")
            name = getattr(request, "name", "")
            if log.isEnabledFor(logging.DEBUG):
                log.debug("event=rpc_request method=%s request=%r", method, safe_text(request))
            failure: Failure | None = None
            try:
                if gated:
                    readiness.require()
                with call_deadline(context.time_remaining()):
                    response = inner(request, context)
            except Exception as exc:
                failure = failure_of(exc, method)
                if failure.ref is not None:
                    log.error(
                        "event=rpc_internal_error method=%s volume=%s ref=%s error=%s",
                        method,
                        volume_id,
                        failure.ref,
                        type(exc).__name__,
                        exc_info=True,
                    )
            code = failure.code if failure else grpc.StatusCode.OK
            elapsed_ms = (time.perf_counter() - started) * 1000
            if metrics is not None:
                metrics.record(method, code.name, elapsed_ms / 1000)
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
                    f" message={failure.message!r}" if failure else "",
                )
            if failure is not None:
                context.abort(failure.code, _bounded(failure.message))
            return response

        return behaviour
