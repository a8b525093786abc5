"""Where things live under the data root, and the one way an ID becomes a path.

Data root layout::

    <root>/volumes/<id>/        directory volume contents
    <root>/images/<id>.img      loop volume backing file (sparse)
    <root>/snapshots/<id>.img|.dir   snapshot contents (loop image or directory tree)
    <root>/state/{volumes,snapshots,groups}/<id>.json   records (see csi.state)
    <root>/docker/<id>/stage    where the Docker volume plugin stages a volume it mounts
    <root>/docker/<id>/mount    the path it hands Docker or Podman (the volume's content)
    <root>/state/docker/<id>.json   the plugin's record of a volume (Docker name, mount IDs)
    <root>/csi.sock             default endpoint

Every directory here, the root included, is root's alone and every file the driver writes
is 0600 (csi.host.modes); only a volume's own root gives a pod (its fsGroup) access.

Volume IDs are derived from the CO-chosen name (a hash), so a retried CreateVolume
after a crash lands on the same paths. An ID that does not match ``ID_PATTERN`` is never
turned into a path.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from csi.errors import InvalidArgument
from csi.host import files, modes

# 128 characters: room for the kubelet's IDs of ephemeral inline volumes ("csi-" + 64 hex).
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
VOLUME_ID_PREFIX = "vol-"
SNAPSHOT_ID_PREFIX = "snap-"
GROUP_ID_PREFIX = "group-"
IMAGE_SUFFIX = ".img"  # a loop volume's image, and a loop volume snapshot's
PARTIAL_SUFFIX = ".partial"
DELETING_SUFFIX = ".deleting"  # a directory volume on its way out


def volume_id_for_name(name: str) -> str:
    """The stable volume ID for a CreateVolume name."""
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]
    return VOLUME_ID_PREFIX + digest


def snapshot_id_for_name(name: str) -> str:
    return SNAPSHOT_ID_PREFIX + hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]


def group_snapshot_id_for_name(name: str) -> str:
    return GROUP_ID_PREFIX + hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]


def is_valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


def check_id(value: str, what: str = "volume_id") -> str:
    """Return ``value`` if it follows the ID grammar, else raise INVALID_ARGUMENT."""
    if not value:
        raise InvalidArgument(f"{what} is required")
    if not is_valid_id(value):
        raise InvalidArgument(f"{what} must match {ID_PATTERN.pattern}")
    return value


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def volumes_dir(self) -> Path:
        return self.root / "volumes"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def state_dir(self) -> Path:
        return self.root / "state" / "volumes"

    @property
    def node_use_dir(self) -> Path:
        """What each volume's node use is (staging path, targets): csi.state.store."""
        return self.root / "state" / "node"

    @property
    def teardown_reserve(self) -> Path:
        """Blocks kept free for tearing volumes down on a full disk: csi.state.reserve."""
        return self.root / "state" / "reserve"

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def snapshot_state_dir(self) -> Path:
        return self.root / "state" / "snapshots"

    @property
    def setup_dir(self) -> Path:
        """Private mount points where CreateVolume prepares a new filesystem's root."""
        return self.root / "setup"

    @property
    def group_state_dir(self) -> Path:
        return self.root / "state" / "groups"

    @property
    def plugin_dir(self) -> Path:
        """Where the Docker volume plugin mounts the volumes it hands out."""
        return self.root / "docker"

    @property
    def plugin_state_dir(self) -> Path:
        return self.root / "state" / "docker"

    def plugin_stage(self, volume_id: str) -> Path:
        """The staging path of a volume mounted for Docker or Podman."""
        return self.plugin_dir / check_id(volume_id) / "stage"

    def plugin_mount(self, volume_id: str) -> Path:
        """The path a mounted volume's content is handed to Docker or Podman at."""
        return self.plugin_dir / check_id(volume_id) / "mount"

    def snapshot_path(self, snapshot_id: str, kind_suffix: str) -> Path:
        """A snapshot's content: ``<id>.img`` for loop volumes, ``<id>.dir`` for directories."""
        return self.snapshots_dir / f"{check_id(snapshot_id, 'snapshot_id')}{kind_suffix}"

    def directory_path(self, volume_id: str) -> Path:
        return self.volumes_dir / check_id(volume_id)

    def image_name(self, volume_id: str) -> str:
        """The name of a loop volume's image in images_dir (a string: no path is made)."""
        return f"{check_id(volume_id)}{IMAGE_SUFFIX}"

    def image_path(self, volume_id: str) -> Path:
        return self.images_dir / self.image_name(volume_id)

    def record_path(self, volume_id: str) -> Path:
        return self.state_dir / f"{check_id(volume_id)}.json"

    def setup_path(self, volume_id: str) -> Path:
        """The private mount point where CreateVolume prepares this volume's new filesystem."""
        return self.setup_dir / check_id(volume_id)

    @property
    def ephemeral_dir(self) -> Path:
        return self.root / "ephemeral"

    def ephemeral_staging(self, volume_id: str) -> Path:
        """The private staging path of an ephemeral inline volume."""
        return self.ephemeral_dir / check_id(volume_id)

    def doomed(self, path: Path) -> Path:
        """The name a directory takes while it is deleted (a retry finishes it there)."""
        return path.with_name(path.name + DELETING_SUFFIX)

    def partial(self, path: Path) -> Path:
        """The scratch name a multi-step create builds before renaming into place."""
        return path.with_name(path.name + PARTIAL_SUFFIX)

    def private_dirs(self) -> tuple[Path, ...]:
        """Every directory the driver keeps, parents first: all of them root's alone
        (modes.PRIVATE_DIR), so no host user reaches a volume, image or record through the
        data root. Nothing needs traversal by others: the kubelet, the sidecars and Docker
        work as root, and a pod reaches its volume through a bind mount, not a path."""
        state = self.root / "state"
        return (
            self.root,
            self.volumes_dir,
            self.images_dir,
            self.snapshots_dir,
            self.ephemeral_dir,
            self.setup_dir,
            self.plugin_dir,
            state,
            self.state_dir,
            self.node_use_dir,
            self.snapshot_state_dir,
            self.group_state_dir,
            self.plugin_state_dir,
        )

    def ensure(self) -> None:
        """Make the directories (a missing one 0700, an existing one narrowed to 0700: a
        data root from an older driver had volumes/ at 0711 and the root as it was made)."""
        for directory in self.private_dirs():
            files.make_dir(directory, modes.PRIVATE_DIR, parents=True)
            files.restrict(directory, modes.PRIVATE_DIR)

    def contains(self, path: Path) -> bool:
        """True if ``path`` (resolved) is the data root or inside it."""
        root = self.root.resolve()
        resolved = path.resolve()
        return resolved == root or root in resolved.parents

    def holds(self, path: Path) -> bool:
        """True if the data root lies inside ``path`` (resolved): a mount there would
        hide every volume and record of the driver."""
        return path.resolve() in self.root.resolve().parents
