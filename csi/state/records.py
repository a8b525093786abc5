"""Typed records of what the driver has made, and their JSON form."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, replace
from typing import Any

SCHEMA_VERSION = 1


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
    kind: VolumeKind
    access_type: AccessType
    fs_type: str  # "" for directory and block volumes
    capacity_bytes: int
    parameters: dict[str, str]
    created_at: float
    phase: Phase = Phase.CREATING
    staging_path: str = ""  # where NodeStageVolume put it, "" when unstaged
    staged_read_only: bool = False
    targets: dict[str, PublishedTarget] = field(default_factory=dict)
    content_source: str = ""  # "snapshot:<id>" or "volume:<id>" when created from one
    ephemeral: bool = False  # an inline volume: made at publish, removed at unpublish

    def with_changes(self, **changes: Any) -> VolumeRecord:
        return replace(self, **changes)

    @property
    def record_id(self) -> str:
        return self.volume_id

    @property
    def in_use(self) -> bool:
        return bool(self.staging_path or self.targets)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = {path: t.to_json() for path, t in self.targets.items()}
        data["schema"] = SCHEMA_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VolumeRecord:
        schema = data.get("schema")
        if schema != SCHEMA_VERSION:
            raise ValueError(f"unsupported record schema {schema!r}")
        return cls(
            volume_id=str(data["volume_id"]),
            name=str(data["name"]),
            kind=VolumeKind(data["kind"]),
            access_type=AccessType(data["access_type"]),
            fs_type=str(data["fs_type"]),
            capacity_bytes=int(data["capacity_bytes"]),
            parameters={str(k): str(v) for k, v in dict(data["parameters"]).items()},
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
        data = asdict(self)
        data["schema"] = SCHEMA_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SnapshotRecord:
        schema = data.get("schema")
        if schema != SCHEMA_VERSION:
            raise ValueError(f"unsupported record schema {schema!r}")
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
        data = asdict(self)
        data["source_volume_ids"] = list(self.source_volume_ids)
        data["snapshot_ids"] = list(self.snapshot_ids)
        data["schema"] = SCHEMA_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroupSnapshotRecord:
        schema = data.get("schema")
        if schema != SCHEMA_VERSION:
            raise ValueError(f"unsupported record schema {schema!r}")
        return cls(
            group_snapshot_id=str(data["group_snapshot_id"]),
            name=str(data["name"]),
            source_volume_ids=tuple(str(v) for v in data["source_volume_ids"]),
            snapshot_ids=tuple(str(v) for v in data["snapshot_ids"]),
            created_at=float(data["created_at"]),
            phase=Phase(data["phase"]),
        )
