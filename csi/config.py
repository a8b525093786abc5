"""Driver configuration: one frozen value built by the CLI and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
GIB = 1024 * MIB
TIB = 1024 * GIB

DEFAULT_DRIVER_NAME = "localvol.csi.dev"


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
    shutdown_grace: float = 30.0

    @property
    def topology_key(self) -> str:
        """The topology segment key that pins a volume to this node."""
        return f"topology.{self.driver_name}/node"
