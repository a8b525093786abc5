"""Typed records of what the driver has made, and their JSON form (schema
``csi.state.migrations.CURRENT``; older records are upgraded before they are decoded)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from csi.state.migrations import CURRENT as SCHEMA_VERSION


class VolumeKind(enum.StrEnum):
    DIRECTORY = "directory"
    LOOP = "loop"


class AccessType(enum.StrEnum):
    MOUNT = "mount"
    BLOCK = "block"


class Phase(enum.StrEnum):
    CREATING = "creating"  # record written, artefacts may be half made
    READY = "ready"
    DELETING = "deleting"  # artefacts may be half removed


def _fields(record: object) -> dict[str, Any]:
    """A record's fields by name, one level deep (a nested record's to_json replaces it):
    what dataclasses.asdict gives without its deep copy, the larger part of a write's CPU."""
    return dict(vars(record))


def _check_schema(data: dict[str, Any]) -> None:
    schema = data.get("schema")
    if schema != SCHEMA_VERSION:
        raise ValueError(f"unsupported record schema {schema!r}")


@dataclass(frozen=True)
class VolumeSpec:
    """What a volume is, parsed once from its StorageClass parameters and capabilities
    (csi.volumes.params) and kept in its record: never strings to parse again."""

    kind: VolumeKind
    access_type: AccessType
    fs_type: str  # "" unless a formatted loop volume
    encrypted: bool = False
    mode: int | None = None  # permissions of the volume's root directory when new
    allowed_mount_options: tuple[str, ...] = ()  # empty: any valid option

    def to_json(self) -> dict[str, Any]:
        data = _fields(self)
        data["allowed_mount_options"] = list(self.allowed_mount_options)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VolumeSpec:
        mode = data.get("mode")
        return cls(
            kind=VolumeKind(data["kind"]),
            access_type=AccessType(data["access_type"]),
            fs_type=str(data["fs_type"]),
            encrypted=bool(data["encrypted"]),
            mode=None if mode is None else int(mode),
            allowed_mount_options=tuple(str(o) for o in data["allowed_mount_options"]),
        )


@dataclass(frozen=True)
class PublishedTarget:
    """One NodePublishVolume target of a volume."""

    read_only: bool
    exclusive: bool  # published with SINGLE_NODE_SINGLE_WRITER: no other target allowed

    def to_json(self) -> dict[str, bool]:
        return {"read_only": self.read_only, "exclusive": self.exclusive}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PublishedTarget:
        return cls(read_only=bool(data["read_only"]), exclusive=bool(data["exclusive"]))


@dataclass(frozen=True)
class VolumeRecord:
    volume_id: str
    name: str
    spec: VolumeSpec
    capacity_bytes: int
    created_at: float
    phase: Phase = Phase.CREATING
    staging_path: str = ""  # where NodeStageVolume put it, "" when unstaged
    staged_read_only: bool = False
    targets: dict[str, PublishedTarget] = field(default_factory=dict)
    content_source: str = ""  # "snapshot:<id>" or "volume:<id>" when created from one
    ephemeral: bool = False  # an inline volume: made at publish, removed at unpublish
    # A directory volume held to its size by this project quota ID (csi.volumes.quotas);
    # None: sized in the record only.
    project_id: int | None = None

    def with_changes(self, **changes: Any) -> VolumeRecord:
        return replace(self, **changes)

    @property
    def kind(self) -> VolumeKind:
        return self.spec.kind

    @property
    def access_type(self) -> AccessType:
        return self.spec.access_type

    @property
    def fs_type(self) -> str:
        return self.spec.fs_type

    @property
    def record_id(self) -> str:
        return self.volume_id

    @property
    def in_use(self) -> bool:
        return bool(self.staging_path or self.targets)

    @property
    def host_paths(self) -> list[str]:
        """Where the volume is on this node: its staging path, if staged, and its targets."""
        return [p for p in (self.staging_path, *self.targets) if p]

    def to_json(self) -> dict[str, Any]:
        data = _fields(self)
        data["spec"] = self.spec.to_json()
        data["targets"] = {path: t.to_json() for path, t in self.targets.items()}
        data["schema"] = SCHEMA_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VolumeRecord:
        _check_schema(data)
        return cls(
            volume_id=str(data["volume_id"]),
            name=str(data["name"]),
            spec=VolumeSpec.from_json(dict(data["spec"])),
            capacity_bytes=int(data["capacity_bytes"]),
            created_at=float(data["created_at"]),
            phase=Phase(data["phase"]),
            staging_path=str(data.get("staging_path", "")),
            staged_read_only=bool(data.get("staged_read_only", False)),
            targets={
                str(path): PublishedTarget.from_json(t)
                for path, t in dict(data.get("targets", {})).items()
            },
            content_source=str(data.get("content_source", "")),
            ephemeral=bool(data.get("ephemeral", False)),
            project_id=None if data["project_id"] is None else int(data["project_id"]),
        )


@dataclass(frozen=True)
class SnapshotRecord:
    """A point-in-time copy of a volume, independent of it once made."""

    snapshot_id: str
    name: str
    source_volume_id: str
    kind: VolumeKind
    access_type: AccessType
    fs_type: str
    size_bytes: int  # the source volume's capacity when the snapshot was taken
    created_at: float
    group_snapshot_id: str = ""
    encrypted: bool = False  # a copy of an encrypted volume opens only with its secret
    phase: Phase = Phase.CREATING

    @property
    def record_id(self) -> str:
        return self.snapshot_id

    def with_changes(self, **changes: Any) -> SnapshotRecord:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = _fields(self)
        data["schema"] = SCHEMA_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SnapshotRecord:
        _check_schema(data)
        return cls(
            snapshot_id=str(data["snapshot_id"]),
            name=str(data["name"]),
            source_volume_id=str(data["source_volume_id"]),
            kind=VolumeKind(data["kind"]),
            access_type=AccessType(data["access_type"]),
            fs_type=str(data["fs_type"]),
            size_bytes=int(data["size_bytes"]),
            created_at=float(data["created_at"]),
            group_snapshot_id=str(data.get("group_snapshot_id", "")),
            encrypted=bool(data.get("encrypted", False)),
            phase=Phase(data["phase"]),
        )


@dataclass(frozen=True)
class GroupSnapshotRecord:
    """Snapshots of several volumes taken at one instant."""

    group_snapshot_id: str
    name: str
    source_volume_ids: tuple[str, ...]
    snapshot_ids: tuple[str, ...]
    created_at: float
    phase: Phase = Phase.CREATING

    @property
    def record_id(self) -> str:
        return self.group_snapshot_id

    def with_changes(self, **changes: Any) -> GroupSnapshotRecord:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = _fields(self)
        data["source_volume_ids"] = list(self.source_volume_ids)
        data["snapshot_ids"] = list(self.snapshot_ids)
        data["schema"] = SCHEMA_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroupSnapshotRecord:
        _check_schema(data)
        return cls(
            group_snapshot_id=str(data["group_snapshot_id"]),
            name=str(data["name"]),
            source_volume_ids=tuple(str(v) for v in data["source_volume_ids"]),
            snapshot_ids=tuple(str(v) for v in data["snapshot_ids"]),
            created_at=float(data["created_at"]),
            phase=Phase(data["phase"]),
        )
