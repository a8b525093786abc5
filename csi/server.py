"""Assemble the driver, serve it on its endpoint, and shut down gracefully."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import grpc

from csi import __version__
from csi.config import Config
from csi.docker_plugin import BUDGET, DockerPlugin
from csi.endpoints import GRPC_OPTIONS, MAX_CONCURRENT_RPCS, bound_privately, grpc_address
from csi.health import HealthRule, HealthServer
from csi.host import orphans, run
from csi.interceptors import RpcInterceptor
from csi.kube.api import ApiError, Client, Endpoint
from csi.kube.snapshot_contents import ContentLabeller
from csi.kube.source_nodes import SourceNodes
from csi.layout import Layout
from csi.locks import KeyedLocks
from csi.metrics import RECONCILE_FAILED, RECONCILE_OK, RECONCILE_PARTIAL, RpcMetrics, new_registry
from csi.node_metrics import NodeCollector
from csi.pb import csi_pb2_grpc
from csi.readiness import Readiness
from csi.reconcile import reconcile
from csi.registration import Registration
from csi.services.controller import ControllerService
from csi.services.group_controller import GroupControllerService
from csi.services.identity import IdentityService
from csi.services.node import NodeService
from csi.services.snapshot_metadata import SnapshotMetadataService
from csi.state.plugin_records import PluginStore
from csi.state.store import GroupSnapshotStore, SnapshotStore, StateStore
from csi.volumes.groups import GroupSnapshots
from csi.volumes.manager import Volumes
from csi.volumes.named import NamedVolumes
from csi.volumes.provisioning import Provisioner
from csi.volumes.snapshots import Snapshots

log = logging.getLogger(__name__)


@dataclass
class Driver:
    config: Config
    server: grpc.Server
    readiness: Readiness
    volumes: Volumes
    snapshots: Snapshots
    groups: GroupSnapshots
    socket_path: Path | None
    registration: Registration | None = None
    health: HealthServer | None = None
    docker: DockerPlugin | None = None
    metrics: RpcMetrics | None = None
    contents: ContentLabeller | None = None

    @property
    def tool_owner(self) -> str:
        """The mark of this driver's forked tools (csi.host.orphans)."""
        return orphans.owner_mark(self.config.node_id, self.config.data_dir)

    def start(self) -> None:
        """Serve /healthz, then the CSI socket, then the Docker plugin's socket, then (the CSI
        socket serving) registration."""
        started: list[Callable[[], object]] = []
        try:
            if self.health is not None:
                self.health.start()
                started.append(self.health.stop)
            self.server.start()
            started.append(lambda: self._stop_csi(0))
            if self.docker is not None:
                self.docker.start()
                started.append(self.docker.stop)
            if self.registration is not None:
                self.registration.start()
        except BaseException:
            for undo in reversed(started):
                undo()
            raise

    def reconcile_then_ready(self) -> None:
        started = time.monotonic()
        try:
            # What a killed predecessor left running must not write beside us (two writers
            # on one filesystem): stopped before anything is touched.
            orphans.stop_orphans(self.tool_owner)
            report = reconcile(self.volumes, self.snapshots, self.groups)
            if self.docker is not None:
                self.docker.named.reconcile()
        except Exception as exc:
            log.exception("event=reconcile_failed")
            self._reconciled(RECONCILE_FAILED, started)
            self.readiness.mark_failed(f"reconciliation failed: {type(exc).__name__}: {exc}")
            return
        self._reconciled(RECONCILE_PARTIAL if report.failed else RECONCILE_OK, started)
        self.readiness.mark_ready()
        log.info("event=ready")
        if self.contents is not None:
            # The records are loaded: the driver now knows which snapshots it holds.
            self.contents.start()

    def _reconciled(self, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.reconciled(outcome, time.monotonic() - started)

    def stop(self, grace: float | None = None) -> None:
        grace = self.config.shutdown_grace if grace is None else grace
        if self.contents is not None:
            self.contents.stop()
        # Deregister first: the kubelet stops sending new calls before the CSI socket goes.
        if self.registration is not None:
            self.registration.stop()
        if self.docker is not None:
            self.docker.stop()
        self._stop_csi(grace)
        if self.health is not None:
            self.health.stop()
        log.info("event=stopped")

    def _stop_csi(self, grace: float) -> None:
        self.server.stop(grace).wait()
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)


def build(config: Config) -> Driver:
    api = _kubernetes_api(config)  # before anything is made: a refusal changes nothing
    layout = Layout(config.data_dir)
    layout.ensure()
    run.mark_tools(orphans.owner_mark(config.node_id, config.data_dir))
    store = StateStore(layout)
    volumes = Volumes(layout, store, config.directory_quota)
    readiness = Readiness()
    locks = KeyedLocks()
    registry = new_registry()
    metrics = RpcMetrics(registry)
    interceptor = RpcInterceptor(readiness, metrics)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc"),
        interceptors=[interceptor],
        options=GRPC_OPTIONS,
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
    )
    csi_pb2_grpc.add_IdentityServicer_to_server(IdentityService(config, readiness), server)
    snapshots = Snapshots(volumes, SnapshotStore(layout))
    groups = GroupSnapshots(snapshots, GroupSnapshotStore(layout))
    sources = None if api is None else SourceNodes(api, config.driver_name, config.topology_key)
    provisioner = Provisioner(config, volumes, snapshots, locks, sources)
    controller = ControllerService(config, volumes, snapshots, provisioner, locks)
    csi_pb2_grpc.add_ControllerServicer_to_server(controller, server)
    csi_pb2_grpc.add_GroupControllerServicer_to_server(
        GroupControllerService(volumes, groups, locks), server
    )
    csi_pb2_grpc.add_NodeServicer_to_server(
        NodeService(config, volumes, provisioner, locks), server
    )
    csi_pb2_grpc.add_SnapshotMetadataServicer_to_server(
        SnapshotMetadataService(snapshots, locks), server
    )
    address, socket_path = grpc_address(config.endpoint)
    if socket_path is None:
        server.add_insecure_port(address)
    else:
        with bound_privately(socket_path):
            server.add_insecure_port(address)
    registration = _registration(config, interceptor)
    registry.register(NodeCollector(volumes, snapshots, groups))
    health = None
    if config.health_address is not None:
        state = registration.state if registration is not None else None
        rule = HealthRule(readiness, config.data_dir, state)
        health = HealthServer(config.health_address, rule, registry=registry)
    docker = None
    if config.docker_plugin_socket is not None:
        named = NamedVolumes(volumes, provisioner, locks, PluginStore(layout), lock_wait=BUDGET)
        docker = DockerPlugin(config.docker_plugin_socket, named, readiness)
    contents = None
    if api is not None:
        contents = ContentLabeller(api, config.driver_name, config.node_id, snapshots.holds)
    return Driver(
        config,
        server,
        readiness,
        volumes,
        snapshots,
        groups,
        socket_path,
        registration=registration,
        health=health,
        docker=docker,
        metrics=metrics,
        contents=contents,
    )


def _kubernetes_api(config: Config) -> Client | None:
    """The API client --assign-snapshot-contents needs (and, with it, the lookup of the node
    that holds a clone's or restore's source), from the pod's environment."""
    if not config.assign_snapshot_contents:
        return None
    try:
        return Client(Endpoint.in_cluster())
    except ApiError as exc:
        raise ValueError(f"--assign-snapshot-contents needs the Kubernetes API: {exc}") from None


def _registration(config: Config, interceptor: RpcInterceptor) -> Registration | None:
    socket_path = config.registration_socket
    if socket_path is None:
        return None
    kubelet_path = config.kubelet_registration_path
    if kubelet_path is None:
        raise ValueError("kubelet registration needs the CSI socket's path as the kubelet sees it")
    return Registration(socket_path, config.driver_name, kubelet_path, [interceptor])


class StopRequest:
    """SIGTERM or SIGINT asked the driver to stop. The handler only notes the signal: a
    Python handler runs in the main thread between two bytecodes, so one that takes a lock
    (an Event's, a logging handler's) while the main thread holds that lock waits for
    itself for ever; the driver then ignored every later signal (found by the full-root
    teardown tests under load). ``wait`` polls the note and logs it."""

    POLL = 0.25

    def __init__(self) -> None:
        self.signum: int | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum  # one store: no lock, no call that could take one

    def wait(self) -> None:
        # A signal the kernel hands to a gRPC thread only runs its Python handler once the
        # main thread runs bytecode: wake up regularly rather than block for ever.
        while self.signum is None:
            time.sleep(self.POLL)
        log.info("event=signal signal=%s", signal.Signals(self.signum).name)


def serve(config: Config) -> int:
    stopping = StopRequest()
    signal.signal(signal.SIGTERM, stopping.on_signal)
    signal.signal(signal.SIGINT, stopping.on_signal)
    driver = build(config)
    driver.start()
    log.info(
        "event=serving version=%s driver=%s node=%s endpoint=%s data_dir=%s",
        __version__,
        config.driver_name,
        config.node_id,
        config.endpoint,
        config.data_dir,
    )
    threading.Thread(target=driver.reconcile_then_ready, name="reconcile", daemon=True).start()
    stopping.wait()
    # Stopping: later signals change nothing. Ignored, not handled: at its own shutdown
    # Python puts back the default action (death) of every signal it handles.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    driver.stop()
    return 0
