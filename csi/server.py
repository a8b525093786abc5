"""Assemble the driver, serve it on its endpoint, and shut down gracefully."""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import grpc

from csi import __version__
from csi.config import Config
from csi.interceptors import RpcInterceptor
from csi.layout import Layout
from csi.locks import KeyedLocks
from csi.pb import csi_pb2_grpc
from csi.readiness import Readiness
from csi.reconcile import reconcile
from csi.services.controller import ControllerService
from csi.services.group_controller import GroupControllerService
from csi.services.identity import IdentityService
from csi.services.node import NodeService
from csi.state.store import GroupSnapshotStore, SnapshotStore, StateStore
from csi.volumes.groups import GroupSnapshots
from csi.volumes.manager import Volumes
from csi.volumes.snapshots import Snapshots

log = logging.getLogger(__name__)


def grpc_address(endpoint: str) -> tuple[str, Path | None]:
    """Translate ``unix:///path`` or ``tcp://host:port`` into a gRPC address."""
    if endpoint.startswith("unix://"):
        path = Path(endpoint.removeprefix("unix://"))
        if not path.is_absolute():
            raise ValueError(f"unix endpoint needs an absolute path: {endpoint}")
        return f"unix://{path}", path
    if endpoint.startswith("unix:"):
        path = Path(endpoint.removeprefix("unix:"))
        return f"unix://{path}", path
    if endpoint.startswith("tcp://"):
        return endpoint.removeprefix("tcp://"), None
    raise ValueError(f"endpoint must start with unix:// or tcp://, got {endpoint!r}")


def _clear_stale_socket(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ValueError(f"{path} exists and is not a socket; refusing to replace it")
    path.unlink()


@dataclass
class Driver:
    config: Config
    server: grpc.Server
    readiness: Readiness
    volumes: Volumes
    snapshots: Snapshots
    groups: GroupSnapshots
    socket_path: Path | None

    def reconcile_then_ready(self) -> None:
        try:
            reconcile(self.volumes, self.snapshots, self.groups)
        except Exception as exc:
            log.exception("event=reconcile_failed")
            self.readiness.mark_failed(f"reconciliation failed: {type(exc).__name__}: {exc}")
            return
        self.readiness.mark_ready()
        log.info("event=ready")

    def stop(self, grace: float | None = None) -> None:
        grace = self.config.shutdown_grace if grace is None else grace
        self.server.stop(grace).wait()
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)
        log.info("event=stopped")


def build(config: Config) -> Driver:
    layout = Layout(config.data_dir)
    layout.ensure()
    store = StateStore(layout)
    volumes = Volumes(layout, store)
    readiness = Readiness()
    locks = KeyedLocks()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc"),
        interceptors=[RpcInterceptor(readiness)],
    )
    csi_pb2_grpc.add_IdentityServicer_to_server(IdentityService(config, readiness), server)
    snapshots = Snapshots(volumes, SnapshotStore(layout))
    groups = GroupSnapshots(snapshots, GroupSnapshotStore(layout))
    controller = ControllerService(config, volumes, snapshots, locks)
    csi_pb2_grpc.add_ControllerServicer_to_server(controller, server)
    csi_pb2_grpc.add_GroupControllerServicer_to_server(
        GroupControllerService(volumes, groups, locks), server
    )
    csi_pb2_grpc.add_NodeServicer_to_server(NodeService(config, volumes, locks), server)
    address, socket_path = grpc_address(config.endpoint)
    if socket_path is not None:
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        _clear_stale_socket(socket_path)
    server.add_insecure_port(address)
    return Driver(config, server, readiness, volumes, snapshots, groups, socket_path)


def serve(config: Config) -> int:
    driver = build(config)
    driver.server.start()
    log.info(
        "event=serving version=%s driver=%s node=%s endpoint=%s data_dir=%s",
        __version__,
        config.driver_name,
        config.node_id,
        config.endpoint,
        config.data_dir,
    )
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("event=signal signal=%s", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=driver.reconcile_then_ready, name="reconcile", daemon=True).start()
    # A signal the kernel hands to a gRPC thread only runs its Python handler once the main
    # thread runs bytecode: wake up regularly rather than block forever.
    while not stopping.wait(0.5):
        pass
    driver.stop()
    return 0
