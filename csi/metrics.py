"""Every Prometheus metric the driver exports: name, type, labels and help, in one place.

Three sources feed them:

- events, counted as they happen: each RPC (``RpcMetrics``, recorded by the interceptor),
  each forked host command (``HOST_COMMANDS``, told by ``csi.host.observe``, which
  ``csi.host.run`` reports to: the host layer imports nothing above it) and start-up
  reconciliation (``RpcMetrics.reconciled``, recorded by the server);
- state, read at scrape time by ``csi.node_metrics.NodeCollector`` from the stores and the
  host, so nothing is kept up to date by hand: the families it yields are declared here
  (``GAUGES``) and built by ``gauge``.

Labels are low-cardinality on purpose: an RPC's method name and status code, a tool's
name and an outcome, a kind of volume and a phase. Never a volume ID, a path or anything a
request carries, so neither a series explosion nor a secret can come through a label.

Host commands are the one process-wide family: ``run()`` is a plain function with no
driver object at hand, and every command a process forks happens on the same host, so one
counter per process is the truth. Each driver's registry registers it beside its own
(a test process with several drivers sees the sum).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily

from csi.host import observe

PREFIX = "localvol"
# RPCs run from a millisecond (Probe) to minutes (a clone's copy): buckets span both.
RPC_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
COMMAND_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# Outcomes of a forked command: csi.host.observe's words.
COMMAND_OUTCOMES = observe.OUTCOMES

# Outcomes of start-up reconciliation.
RECONCILE_OK = "ok"  # every record settled
RECONCILE_PARTIAL = "partial"  # some steps failed; their records were quarantined
RECONCILE_FAILED = "failed"  # reconciliation itself failed; the driver is not ready
RECONCILE_OUTCOMES = (RECONCILE_OK, RECONCILE_PARTIAL, RECONCILE_FAILED)


@dataclass(frozen=True)
class GaugeSpec:
    """A gauge family read at scrape time."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


VOLUMES = GaugeSpec(
    f"{PREFIX}_volumes",
    "Volume records on this node, by kind of volume and phase.",
    ("kind", "phase"),
)
SNAPSHOTS = GaugeSpec(
    f"{PREFIX}_snapshots",
    "Snapshot records on this node, by kind of volume copied and phase.",
    ("kind", "phase"),
)
GROUP_SNAPSHOTS = GaugeSpec(
    f"{PREFIX}_group_snapshots", "Group snapshot records on this node, by phase.", ("phase",)
)
QUARANTINED = GaugeSpec(
    f"{PREFIX}_quarantined_records",
    "Records the driver refuses to act on, by store (volume, snapshot, group) and reason "
    "(damaged: unreadable or an interrupted operation that could not be settled; "
    "too_new: written by a newer driver).",
    ("store", "reason"),
)
PROVISIONED = GaugeSpec(
    f"{PREFIX}_provisioned_bytes",
    "Capacity promised to the volumes on this node (ready records), by kind of volume.",
    ("kind",),
)
USED = GaugeSpec(
    f"{PREFIX}_used_bytes",
    "Disk space taken by the loop volumes' sparse images and the snapshots' image copies "
    "(allocated blocks), by what holds it (volume, snapshot). Directory volumes are not "
    "walked at scrape time: they share the data root's filesystem, see the free bytes.",
    ("holder",),
)
DATA_ROOT_FREE = GaugeSpec(
    f"{PREFIX}_data_root_free_bytes",
    "Bytes available to the driver on the data root's filesystem.",
)
DATA_ROOT_SIZE = GaugeSpec(
    f"{PREFIX}_data_root_size_bytes", "Size of the data root's filesystem in bytes."
)
LOOP_DEVICES = GaugeSpec(
    f"{PREFIX}_loop_devices_attached",
    "Loop devices attached to the images of recorded volumes, by kind of volume.",
    ("kind",),
)
SCRAPE_ERRORS = GaugeSpec(
    f"{PREFIX}_scrape_errors",
    "Parts of this scrape that could not be read (each is logged), by part.",
    ("part",),
)
DIRECTORY_QUOTA = GaugeSpec(
    f"{PREFIX}_directory_quota_enforced",
    "1 if new directory volumes are held to their size by the data root's project quotas, "
    "else 0 (the driver's log at start says why not).",
)
GAUGES = (
    VOLUMES,
    SNAPSHOTS,
    GROUP_SNAPSHOTS,
    QUARANTINED,
    PROVISIONED,
    USED,
    DATA_ROOT_FREE,
    DATA_ROOT_SIZE,
    DIRECTORY_QUOTA,
    LOOP_DEVICES,
    SCRAPE_ERRORS,
)


def gauge(spec: GaugeSpec) -> GaugeMetricFamily:
    """An empty family for ``spec``, to fill with ``add_metric``."""
    return GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))


class HostCommandMetrics:
    """Forked host commands, by tool and outcome, and how long they ran, by tool."""

    def __init__(self) -> None:
        self.commands = Counter(
            f"{PREFIX}_host_commands",
            "Host commands the driver forked, by tool and outcome "
            f"({', '.join(COMMAND_OUTCOMES)}).",
            ("tool", "outcome"),
            registry=None,
        )
        self.duration = Histogram(
            f"{PREFIX}_host_command_duration_seconds",
            "How long forked host commands ran, by tool.",
            ("tool",),
            buckets=COMMAND_BUCKETS,
            registry=None,
        )

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(self.commands)
        registry.register(self.duration)

    def record(self, tool: str, outcome: str, seconds: float) -> None:
        self.commands.labels(tool, outcome).inc()
        self.duration.labels(tool).observe(seconds)


HOST_COMMANDS = HostCommandMetrics()


class RpcMetrics:
    """One driver's calls and its start-up reconciliation."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            f"{PREFIX}_rpc_requests",
            "gRPC calls served, by method (e.g. CreateVolume) and status code (e.g. OK).",
            ("method", "code"),
            registry=registry,
        )
        self.duration = Histogram(
            f"{PREFIX}_rpc_duration_seconds",
            "How long gRPC calls took, by method and status code.",
            ("method", "code"),
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self.reconcile_duration = Gauge(
            f"{PREFIX}_reconcile_duration_seconds",
            "How long start-up reconciliation took (0 until it finished).",
            registry=registry,
        )
        self.reconciles = Counter(
            f"{PREFIX}_reconcile_runs",
            "Start-up reconciliations, by outcome "
            f"({', '.join(RECONCILE_OUTCOMES)}; partial: some records quarantined).",
            ("outcome",),
            registry=registry,
        )

    def record(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.duration.labels(method, code).observe(seconds)

    def reconciled(self, outcome: str, seconds: float) -> None:
        self.reconciles.labels(outcome).inc()
        self.reconcile_duration.set(seconds)


def new_registry() -> CollectorRegistry:
    """A registry of its own (not the library's global one), with the host commands.

    The library's ``*_created`` series (each counter's start time, a gauge family of its
    own in the text format) are turned off: Prometheus reads restarts from the counters
    themselves, and the extra families only double what a scrape carries."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=True)
    HOST_COMMANDS.register(registry)
    observe.COMMANDS.add(HOST_COMMANDS.record)
    return registry
