"""Registration with the kubelet, in place of a node-driver-registrar container.

The kubelet watches its plugin registry directory. When a socket appears there it calls
``GetInfo`` (who are you, where is your CSI socket, which CSI versions), registers the driver
and reports the outcome with ``NotifyRegistrationStatus``. When the socket disappears it
deregisters the driver. So the socket is bound only once the CSI socket serves, afresh at
every start (a restarted driver or kubelet registers again), and removed at shutdown.
"""

from __future__ import annotations

import enum
import logging
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from csi.endpoints import GRPC_OPTIONS, MAX_CONCURRENT_RPCS, bound_privately
from csi.pb import pluginregistration_pb2 as pb
from csi.pb import pluginregistration_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

PLUGIN_TYPE = "CSIPlugin"
# The kubelet's CSI plugin handler takes the highest 1.x version listed; it refuses a list
# with none (2.x and later are ignored, CSI 0.x is no longer served).
SUPPORTED_VERSIONS = ("1.0.0",)
MAX_REASON = 512  # the kubelet's error text, bounded before it is logged or served


class State(enum.Enum):
    PENDING = "pending"  # no verdict yet since the kubelet last asked
    ACCEPTED = "accepted"
    REFUSED = "refused"


@dataclass(frozen=True)
class Status:
    state: State
    reason: str = ""

    @property
    def problem(self) -> str | None:
        """Why the driver is not registered, or None when the kubelet accepted it."""
        if self.state is State.ACCEPTED:
            return None
        if self.state is State.REFUSED:
            return f"the kubelet refused the registration: {self.reason or 'no reason given'}"
        return "not yet registered with the kubelet"


class RegistrationState:
    """The kubelet's latest verdict, shared by the gRPC service and the health endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = Status(State.PENDING)

    @property
    def status(self) -> Status:
        with self._lock:
            return self._status

    def set(self, status: Status) -> None:
        with self._lock:
            self._status = status


class RegistrationService(pb_grpc.RegistrationServicer):  # type: ignore[misc]
    def __init__(
        self, driver_name: str, kubelet_registration_path: Path, state: RegistrationState
    ) -> None:
        self._driver_name = driver_name
        self._endpoint = str(kubelet_registration_path)
        self._state = state

    def GetInfo(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.PluginInfo:
        # A kubelet asking (again: it restarted, or saw the socket anew) means a verdict
        # is to come; the one before it no longer holds.
        self._state.set(Status(State.PENDING))
        log.debug(
            "event=registration_info driver=%s endpoint=%s", self._driver_name, self._endpoint
        )
        return pb.PluginInfo(
            type=PLUGIN_TYPE,
            name=self._driver_name,
            endpoint=self._endpoint,
            supported_versions=list(SUPPORTED_VERSIONS),
        )

    def NotifyRegistrationStatus(
        self, request: pb.RegistrationStatus, context: grpc.ServicerContext
    ) -> pb.RegistrationStatusResponse:
        if request.plugin_registered:
            self._state.set(Status(State.ACCEPTED))
            log.info("event=registered driver=%s", self._driver_name)
        else:
            reason = " ".join(request.error.split())[:MAX_REASON]
            self._state.set(Status(State.REFUSED, reason))
            log.error("event=registration_refused driver=%s reason=%r", self._driver_name, reason)
        return pb.RegistrationStatusResponse()


class Registration:
    """The registration socket's life: bound by ``start`` (after the CSI server started),
    removed by ``stop``."""

    def __init__(
        self,
        socket_path: Path,
        driver_name: str,
        kubelet_registration_path: Path,
        interceptors: list[grpc.ServerInterceptor],  # type: ignore[type-arg]
    ) -> None:
        self.socket_path = socket_path
        self.state = RegistrationState()
        self._service = RegistrationService(driver_name, kubelet_registration_path, self.state)
        self._interceptors = interceptors
        self._server: grpc.Server | None = None

    def start(self) -> None:
        assert self._server is None, "registration already started"
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="registration"),
            interceptors=self._interceptors,
            options=GRPC_OPTIONS,
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        )
        pb_grpc.add_RegistrationServicer_to_server(self._service, server)
        try:
            with bound_privately(self.socket_path):
                server.add_insecure_port(f"unix://{self.socket_path}")
        except RuntimeError:
            raise OSError(f"cannot bind the registration socket {self.socket_path}") from None
        server.start()
        self._server = server
        log.info("event=registration_serving socket=%s", self.socket_path)

    def stop(self, grace: float = 1.0) -> None:
        """Remove the socket first (the kubelet deregisters the driver), then stop serving."""
        server, self._server = self._server, None
        if server is None:
            return
        self.socket_path.unlink(missing_ok=True)
        server.stop(grace).wait()
        log.info("event=registration_stopped socket=%s", self.socket_path)
