"""Every way a volume is made or grows, through one place.

``Provisioner.create`` makes a volume for CreateVolume (empty, restored from a snapshot, or
cloned from a volume) and for an inline ephemeral volume; ``Provisioner.grow`` grows one for
ControllerExpandVolume and NodeExpandVolume. Each owns, in this order: the answer to a retry
(an existing volume of the name must match the request), the source (resolved, checked to be
the same kind of volume, locked while it is copied), the size (csi.volumes.sizing) and the
reservation of room: the node's volume count (``--max-volumes-per-node``) and bytes (free
space, ``--capacity-limit``), held from the check until the record shows the volume, so
concurrent requests can never pass a limit together.

A source this node does not hold may be on another node (the scheduler placed the claim's
pod without knowing where its source is). When the ``SourceLocator`` names that node, the
claim is pointed at it (its selected node) and the answer, FAILED_PRECONDITION, says so:
the scheduler then places the pod there. If the claim cannot be moved, RESOURCE_EXHAUSTED
("cannot be made in the topology asked for") makes a topology-aware provisioner hand the
claim back to the scheduler, with the same message naming the node. A source no node
holds stays NOT_FOUND.

Callers hold the lock of the volume being made or grown (csi.locks), as for every call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from csi.config import Config
from csi.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
)
from csi.layout import volume_id_for_name
from csi.locks import KeyedLocks
from csi.state.records import AccessType, Phase, VolumeKind, VolumeRecord, VolumeSpec
from csi.units import show_size
from csi.volumes import sizing
from csi.volumes.manager import Volumes
from csi.volumes.snapshots import Snapshots


@dataclass(frozen=True)
class SourceRef:
    """A content source as a request names it: ``kind`` is "snapshot" or "volume"."""

    kind: str
    id: str

    @property
    def label(self) -> str:
        """How the new volume records it, compared on retries."""
        return f"{self.kind}:{self.id}"

    @property
    def named(self) -> str:
        """How a message names it: "source snapshot snap-..."."""
        return f"source {self.kind} {self.id}"

    @property
    def is_of(self) -> str:
        """What links it to the kind of volume it holds, in a message."""
        return "is a copy of" if self.kind == "snapshot" else "is"


# What a volume is, as far as a copy of it goes: kind, access type, filesystem, encrypted.
Facts = tuple[VolumeKind, AccessType, str, bool]


def describe(facts: Facts) -> str:
    """A volume's kind as a StorageClass and claim ask for it: "a loop ext4 filesystem
    volume", "an encrypted loop ext4 filesystem volume", "a directory volume"..."""
    kind, access_type, fs_type, encrypted = facts
    if kind is VolumeKind.DIRECTORY:
        text = "directory volume"
    elif access_type is AccessType.BLOCK:
        text = "loop raw block volume (volumeMode: Block)"
    else:
        text = f"loop {fs_type} filesystem volume"
    if encrypted:
        text = f"encrypted {text}"
    article = "an" if text[0] in "aeiou" else "a"
    return f"{article} {text}"


@dataclass(frozen=True)
class NewVolume:
    """What a caller asks to be made; sizes in bytes, 0 for unset."""

    name: str
    spec: VolumeSpec
    required: int = 0
    limit: int = 0
    source: SourceRef | None = None
    secret: bytes | None = None  # an encrypted volume's key material
    volume_id: str = ""  # inline volumes keep the kubelet's ID; else derived from the name
    ephemeral: bool = False
    claim: tuple[str, str] | None = None  # the claim's namespace and name, when known

    @property
    def id(self) -> str:
        return self.volume_id or volume_id_for_name(self.name)


@dataclass(frozen=True)
class _Content:
    """A resolved source: where its data is, what mount points to freeze while copying."""

    path: Path
    freeze: list[str]


class SourceLocator(Protocol):
    """Where a source this node does not hold is (csi.kube.source_nodes)."""

    def node_of(self, kind: str, source_id: str) -> str | None:
        """The node holding source ``kind`` ("volume", "snapshot") ``source_id``, if known."""

    def move_claim(self, namespace: str, name: str, here: str, there: str) -> bool:
        """Point the claim at node ``there`` if it still names ``here``; whether it did."""


class Provisioner:
    def __init__(
        self,
        config: Config,
        volumes: Volumes,
        snapshots: Snapshots,
        locks: KeyedLocks,
        sources: SourceLocator | None = None,
    ) -> None:
        self._config = config
        self._sources = sources
        self._volumes = volumes
        self._snapshots = snapshots
        self._store = volumes.store
        self._locks = locks
        self._reserving = threading.Lock()  # short: guards only the check and the table
        self._reserved: dict[str, int] = {}  # volume ID -> the size it is being made or grown to

    # -- making ----------------------------------------------------------------------
    def create(self, new: NewVolume) -> VolumeRecord:
        sizing.check_range(new.required, new.limit)
        volume_id = new.id
        self._store.check_usable(volume_id)
        held = self._store.get(volume_id)
        if held is not None and held.phase is not Phase.DELETING:
            if held.name != new.name:
                # An ID names exactly one volume: an inline volume's ID that is a persistent
                # volume's, or a name whose ID another volume holds, is never answered with it.
                raise AlreadyExists(
                    f"volume ID {volume_id} already holds another volume ({held.name}), not "
                    f"{new.name}; an ID names exactly one volume"
                )
            # A retry (or one after a crash mid-creation): the same volume must be asked for.
            self._check_retry(held, new)
            if held.phase is Phase.READY:
                # Answered from the volume, even if its source is gone by now.
                return held
        with contextlib.ExitStack() as stack:
            required = new.required
            source_size, source_key = self._source_facts(new)
            if new.source is not None:
                if new.limit and new.limit < source_size:
                    raise OutOfRange(
                        f"the {new.source.named} holds {show_size(source_size)}, more than "
                        f"this request's limit of {show_size(new.limit)}: a clone or restore "
                        "is at least its source's size; ask for at least that"
                    )
                required = max(required, source_size)
                stack.enter_context(self._locks.hold(source_key))
            size = sizing.choose_size(required, new.limit, new.spec, self._config)
            stack.enter_context(self._reserve(volume_id, size, new_volume=True))
            content = self._resolve(new.source) if new.source is not None else None
            return self._volumes.create(
                new.name,
                new.spec,
                size,
                source=content.path if content else None,
                freeze=content.freeze if content else (),
                volume_id=volume_id,
                content_source=new.source.label if new.source else "",
                ephemeral=new.ephemeral,
                secret=new.secret,
            )

    def _check_retry(self, existing: VolumeRecord, new: NewVolume) -> None:
        if existing.spec != new.spec:
            raise AlreadyExists("a volume with this name exists with different parameters")
        if not sizing.fits(existing, new.required, new.limit):
            raise AlreadyExists(
                f"a volume with this name exists with capacity {existing.capacity_bytes} bytes"
            )
        if existing.content_source != (new.source.label if new.source else ""):
            raise AlreadyExists("a volume with this name exists with another source")

    def _source_facts(self, new: NewVolume) -> tuple[int, str]:
        """The source's size and lock key, after checking it is the kind of volume asked
        for; (0, "") without a source."""
        ref = new.source
        if ref is None:
            return 0, ""
        try:
            return self._local_source_facts(new, ref)
        except NotFound:
            self._refuse_if_elsewhere(new, ref)
            raise

    def _refuse_if_elsewhere(self, new: NewVolume, ref: SourceRef) -> None:
        """If another node holds ``ref``: the claim moved there and FAILED_PRECONDITION, or
        RESOURCE_EXHAUSTED when it cannot be moved; both name the node."""
        if self._sources is None:
            return
        there, here = self._sources.node_of(ref.kind, ref.id), self._config.node_id
        if not there or there == here:
            return
        why = (
            f"the {ref.named} is on node {there}, not on this node ({here}): a clone or "
            f"restore is made on the node that holds its source, so the claim's pod must run "
            f"on {there}"
        )
        if new.claim is not None and self._sources.move_claim(*new.claim, here, there):
            raise FailedPrecondition(
                f"{why}; the claim now names {there} as its node and its pod is scheduled "
                f"there (a pod whose spec keeps it off {there} waits)"
            )
        raise ResourceExhausted(
            f"{why}; the claim goes back to the scheduler (a pod whose spec keeps it off "
            f"{there} waits)"
        )

    def _local_source_facts(self, new: NewVolume, ref: SourceRef) -> tuple[int, str]:
        facts: Facts
        if ref.kind == "snapshot":
            snapshot = self._snapshots.store.require_ready(ref.id)
            facts = (snapshot.kind, snapshot.access_type, snapshot.fs_type, snapshot.encrypted)
            size = snapshot.size_bytes
        elif ref.kind == "volume":
            volume = self._store.require_ready(ref.id)
            spec = volume.spec
            facts = (spec.kind, spec.access_type, spec.fs_type, spec.encrypted)
            size = volume.capacity_bytes
        else:
            raise InvalidArgument("volume_content_source names neither a snapshot nor a volume")
        spec = new.spec
        wanted: Facts = (spec.kind, spec.access_type, spec.fs_type, spec.encrypted)
        if facts != wanted:
            raise InvalidArgument(
                f"the {ref.named} {ref.is_of} {describe(facts)}, but this request is for "
                f"{describe(wanted)}; clone or restore into a StorageClass and volumeMode "
                "of the source's kind (volumeType, filesystem, encryption)"
            )
        return size, ref.id

    def _resolve(self, ref: SourceRef) -> _Content:
        """Where the source's data is, read again under its lock."""
        if ref.kind == "snapshot":
            snapshot = self._snapshots.store.require_ready(ref.id)
            return _Content(self._snapshots.content_path(snapshot), [])
        volume = self._store.require_ready(ref.id)
        return _Content(self._snapshots.source_path(volume), self._snapshots.freeze_points(volume))

    # -- growing ---------------------------------------------------------------------
    def grow(self, record: VolumeRecord, required: int, limit: int) -> VolumeRecord:
        """Grow ``record`` for ``[required, limit]`` (never shrinks); OUT_OF_RANGE beyond the
        maximum volume size, RESOURCE_EXHAUSTED when the growth does not fit."""
        size = sizing.expansion_size(record, required, limit, self._config)
        if size <= record.capacity_bytes:
            return record
        with self._reserve(record.volume_id, size, new_volume=False):
            return self._volumes.expand(record, size)

    # -- room ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _reserve(self, volume_id: str, size: int, *, new_volume: bool) -> Iterator[None]:
        """Check the node has room for ``volume_id`` at ``size`` and hold it until the
        record shows it, so concurrent requests cannot together pass the limits."""
        with self._reserving:
            if volume_id in self._reserved:
                raise FailedPrecondition(f"{volume_id} is already being made or grown")
            pending_bytes = 0
            pending_volumes = 0
            for other, target in self._reserved.items():
                made = self._store.get(other)
                pending_bytes += max(0, target - (made.capacity_bytes if made else 0))
                pending_volumes += made is None
            current = self._store.get(volume_id)
            limit = self._config.max_volumes_per_node
            counted = self._store.count() + pending_volumes
            if new_volume and current is None and limit and counted >= limit:
                raise ResourceExhausted(f"this node already holds its maximum of {limit} volumes")
            wanted = size - (current.capacity_bytes if current else 0)
            ledger = self._volumes.ledger
            free = sizing.available_capacity(self._config, ledger) - pending_bytes
            if wanted > free:
                free = max(0, free)
                if current is None:
                    message = f"{wanted} bytes requested, only {free} bytes available"
                else:
                    message = f"growing by {wanted} bytes, only {free} bytes are free"
                raise ResourceExhausted(message)
            self._reserved[volume_id] = size
        try:
            yield
        finally:
            with self._reserving:
                self._reserved.pop(volume_id, None)
