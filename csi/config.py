"""Driver configuration: one frozen value built by the CLI and passed down."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
GIB = 1024 * MIB
TIB = 1024 * GIB

DEFAULT_DRIVER_NAME = "localvol.csi.dev"


class QuotaMode(enum.StrEnum):
    """``--directory-quota``: may directory volumes be held to their size (csi.volumes.quotas)?"""

    ENFORCE = "enforce"  # where the data root's filesystem can; unenforced elsewhere
    REQUIRE = "require"  # refuse directory volumes that cannot be held to their size
    OFF = "off"


@dataclass(frozen=True)
class HostPort:
    """A TCP listening address; an empty host means every interface."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Config:
    driver_name: str
    node_id: str
    data_dir: Path
    endpoint: str
    max_volumes_per_node: int = 0
    default_volume_size: int = 1 * GIB
    max_volume_size: int = 16 * TIB
    capacity_limit: int = 0
    log_level: str = "info"
    log_format: str = "text"
    workers: int = 16
    # Kubernetes' external-resizer has no per-node mode; in a DaemonSet the driver leaves
    # EXPAND_VOLUME out of its controller capabilities and NodeExpandVolume grows the image.
    controller_expansion: bool = True
    # Thin provisioning: promise loop volumes more space than the disk has free.
    overcommit: bool = False
    directory_quota: QuotaMode = QuotaMode.ENFORCE
    shutdown_grace: float = 30.0
    # Kubelet plugin registration (csi/registration.py), on when the directory is set: the
    # kubelet's plugin registry, and the CSI socket's path as the kubelet sees it.
    plugin_registration_dir: Path | None = None
    kubelet_registration_path: Path | None = None
    # HTTP /healthz (csi/health.py), off when None.
    health_address: HostPort | None = None
    # Also answer with the CSI 1.12 volume condition (Kubernetes 1.34-1.36 read it) beside
    # the 1.13 health RPCs; csi/services/legacy_condition.py.
    legacy_volume_condition: bool = True
    # The Docker volume-plugin protocol (csi/docker_plugin.py) on this unix socket, off when None.
    docker_plugin_socket: Path | None = None
    # Label imported VolumeSnapshotContents this node holds (csi/kube/snapshot_contents.py).
    assign_snapshot_contents: bool = False

    @property
    def topology_key(self) -> str:
        """The topology segment key that pins a volume to this node."""
        return f"topology.{self.driver_name}/node"

    @property
    def registration_socket(self) -> Path | None:
        """Where the kubelet finds the driver's registration service, if registration is on."""
        if self.plugin_registration_dir is None:
            return None
        return self.plugin_registration_dir / f"{self.driver_name}-reg.sock"
