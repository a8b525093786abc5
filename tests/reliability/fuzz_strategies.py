"""Hypothesis strategies that build any CSI request from its message descriptor.

Every field may be set or left out; strings mix random text, hostile values and values
the driver knows (volume IDs, parameter names, paths it can use), so generated requests
reach past validation as well as being refused by it. Ints cover each type's full range.

Node paths are confined to the caller's kubelet directory, relative junk and places the
driver must refuse (symlinks, the data root): a random absolute path could name a real
mount on the test machine, and NodeUnpublishVolume unmounts whatever it is given (see the
xfail in test_bad_input_edges).

``SEED`` is drawn afresh for each run unless ``LOCALVOL_FUZZ_SEED`` names one (a replay);
``regressions`` holds requests that once found a bug, replayed first on every run.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from csi.pb import csi_pb2 as pb

SEED_ENV = "LOCALVOL_FUZZ_SEED"


def _seed() -> int:
    chosen = os.environ.get(SEED_ENV, "").strip()
    return int(chosen) if chosen else random.SystemRandom().randrange(2**32)


SEED = _seed()

MIB, GIB = 1 << 20, 1 << 30
F = FieldDescriptor
INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
SIZES = (0, 1, -1, 16 * MIB, 64 * MIB, GIB, 2**40, 2**62)
PARAM_KEYS = ("volumeType", "fsType", "csi.storage.k8s.io/fstype", "csi.storage.k8s.io/pvc/name")
CONTEXT_KEYS = ("csi.storage.k8s.io/ephemeral", "volumeType", "size", "fsType")
VALUES = ("loop", "directory", "ext4", "xfs", "true", "16Mi", "1Gi", "-5", "")
FLAGS = ("ro", "noatime", "nodev", "sync", "", "a,b", "x=1,y", "noexec")


@dataclass(frozen=True)
class Hints:
    """Values the driver knows, so requests can get past validation."""

    ids: Sequence[str]  # existing volume, snapshot and unknown-but-valid IDs
    names: Sequence[str]  # names of existing volumes and fresh ones
    paths: Sequence[str]  # usable and refused node paths (never a foreign absolute one)
    pods: str  # a directory where new target paths may be made
    junk: Sequence[str]  # hostile strings for non-path fields
    ext4: str  # an ext4 volume, staged at ``staging`` when an example asks
    directory: str
    snapshot: str
    staging: str
    target: str


def _text(hints: Hints) -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=24), st.sampled_from(hints.junk))


def _path(hints: Hints) -> st.SearchStrategy[str]:
    relative = st.text(max_size=16).map(lambda t: t.lstrip("/") or "rel")
    component = st.text(max_size=12).map(lambda t: t.replace("/", "_").strip(".") or "x")
    fresh = component.map(lambda t: f"{hints.pods}/{t}")
    return st.one_of(st.sampled_from(hints.paths), relative, fresh)


def string_for(name: str, hints: Hints) -> st.SearchStrategy[str]:
    if name.endswith(("_id", "_ids")):
        return st.one_of(st.sampled_from(hints.ids), _text(hints))
    if name.endswith("_path"):
        return _path(hints)
    if name == "name":
        return st.one_of(st.sampled_from(hints.names), _text(hints))
    if name == "fs_type":
        return st.sampled_from(("", "ext4", "xfs", "btrfs", "../x"))
    if name == "mount_flags":
        return st.one_of(st.sampled_from(FLAGS), st.text(max_size=8))
    if name.endswith("token"):
        return st.one_of(st.sampled_from(("", "after:vol-0", "after:")), _text(hints))
    return _text(hints)


def _map(name: str, hints: Hints) -> st.SearchStrategy[dict[str, str]]:
    keys: st.SearchStrategy[str] = _text(hints)
    if name in ("parameters", "mutable_parameters"):
        keys = st.one_of(st.sampled_from(PARAM_KEYS), keys)
    elif name.endswith("context"):
        keys = st.one_of(st.sampled_from(CONTEXT_KEYS + PARAM_KEYS), keys)
    values = st.one_of(st.sampled_from(VALUES), _text(hints))
    return st.dictionaries(keys, values, max_size=3)


def _scalar(field: FieldDescriptor, hints: Hints) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_STRING:
        return string_for(field.name, hints)
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=16)
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type == F.TYPE_ENUM:
        assert field.enum_type is not None
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-3, 40))
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(allow_nan=False, width=32)
    lo, hi = INT_RANGES[field.type]
    edges = [v for v in SIZES if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


@st.composite
def message_of(draw: st.DrawFn, descriptor: Descriptor, hints: Hints, depth: int = 0) -> Message:
    """A message of type ``descriptor``; each field set or not, nested up to 4 deep."""
    message = GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        value = getattr(message, field.name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value.update(draw(_map(field.name, hints)))
        elif entry is not None:
            if depth >= 4:
                continue
            count = draw(st.integers(1, 2)) if field.is_repeated else 1
            for _ in range(count):
                item = draw(message_of(entry, hints, depth + 1))
                (value.add() if field.is_repeated else value).CopyFrom(item)
        elif field.is_repeated:
            value.extend(draw(st.lists(_scalar(field, hints), max_size=3)))
        else:
            setattr(message, field.name, draw(_scalar(field, hints)))
    return message


def templates(h: Hints) -> dict[str, Message]:
    """A valid request per RPC, for generated values to replace parts of."""
    cap = pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(),
        access_mode=pb.VolumeCapability.AccessMode(
            mode=pb.VolumeCapability.AccessMode.Mode.SINGLE_NODE_WRITER
        ),
    )
    size = pb.CapacityRange(required_bytes=16 * MIB)
    grow = pb.CapacityRange(required_bytes=32 * MIB)
    ext4 = {"volumeType": "loop", "fsType": "ext4"}
    ephemeral = {"csi.storage.k8s.io/ephemeral": "true", "volumeType": "directory"}
    return {
        "CreateVolume": pb.CreateVolumeRequest(name="fuzz-new", parameters=ext4,
            capacity_range=size, volume_capabilities=[cap]),
        "DeleteVolume": pb.DeleteVolumeRequest(volume_id=h.ids[-1]),
        "ValidateVolumeCapabilities": pb.ValidateVolumeCapabilitiesRequest(
            volume_id=h.ext4, volume_capabilities=[cap], parameters=ext4),
        "GetCapacity": pb.GetCapacityRequest(volume_capabilities=[cap], parameters=ext4),
        "CreateSnapshot": pb.CreateSnapshotRequest(name="fuzz-new", source_volume_id=h.ext4),
        "DeleteSnapshot": pb.DeleteSnapshotRequest(snapshot_id=h.ids[-1]),
        "ListSnapshots": pb.ListSnapshotsRequest(source_volume_id=h.directory, max_entries=1),
        "GetSnapshot": pb.GetSnapshotRequest(snapshot_id=h.snapshot),
        "ControllerExpandVolume": pb.ControllerExpandVolumeRequest(volume_id=h.ext4,
            capacity_range=grow),
        "ControllerGetVolume": pb.ControllerGetVolumeRequest(volume_id=h.ext4),
        "CreateVolumeGroupSnapshot": pb.CreateVolumeGroupSnapshotRequest(name="fuzz-new",
            source_volume_ids=[h.ext4, h.directory]),
        "NodeStageVolume": pb.NodeStageVolumeRequest(volume_id=h.ext4,
            staging_target_path=h.staging, volume_capability=cap),
        "NodeUnstageVolume": pb.NodeUnstageVolumeRequest(volume_id=h.ext4,
            staging_target_path=h.staging),
        "NodePublishVolume": pb.NodePublishVolumeRequest(volume_id=h.ext4,
            staging_target_path=h.staging, target_path=h.target, volume_capability=cap),
        "NodeUnpublishVolume": pb.NodeUnpublishVolumeRequest(volume_id=h.ext4,
            target_path=h.target),
        "NodeGetVolumeStats": pb.NodeGetVolumeStatsRequest(volume_id=h.ext4,
            volume_path=h.staging),
        "NodeExpandVolume": pb.NodeExpandVolumeRequest(volume_id=h.ext4, volume_path=h.staging,
            capacity_range=grow),
        "NodePublishVolume(ephemeral)": pb.NodePublishVolumeRequest(volume_id=h.ids[-1],
            target_path=h.target, volume_capability=cap, volume_context=ephemeral),
    }  # fmt: skip


@st.composite
def request_for(draw: st.DrawFn, method: MethodDescriptor, hints: Hints) -> Message:
    """A generated request (one time in four), a valid one, or a valid one with parts
    replaced by generated values or left out."""
    generated = draw(message_of(method.input_type, hints))
    choices = [t for n, t in templates(hints).items() if n.split("(")[0] == method.name]
    mode = draw(st.integers(0, 3))
    if not choices or mode == 0:
        return generated
    out = draw(st.sampled_from(choices))
    if mode == 1:
        return out
    for field, _ in out.ListFields():
        if draw(st.integers(0, 7)) == 0:
            out.ClearField(field.name)
    for field, _ in generated.ListFields():
        if draw(st.integers(0, 3)) == 0:
            single = type(generated)()
            single.CopyFrom(generated)
            for other, _ in generated.ListFields():
                if other.name != field.name:
                    single.ClearField(other.name)
            out.ClearField(field.name)
            out.MergeFrom(single)
    return out


Case = tuple[MethodDescriptor, Message, int]  # method, request, setup (0, 1 staged, 2 published)


def _method(name: str) -> MethodDescriptor:
    for service in pb.DESCRIPTOR.services_by_name.values():
        if name in service.methods_by_name:
            return service.methods_by_name[name]
    raise KeyError(name)


def _cap(mode: int = 1, flags: Sequence[str] = ()) -> pb.VolumeCapability:
    return pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(mount_flags=list(flags)),
        access_mode=pb.VolumeCapability.AccessMode(mode=mode),  # type: ignore[arg-type]
    )


def regressions(group: str, h: Hints) -> list[Case]:
    """Requests that once ended as INTERNAL or harmed the host (each bug fixed since; see
    test_bad_input_edges), for the service ``group``: kept so they are tried on every run."""
    overlong = "/" + "x/" * 10_000
    cases: dict[str, list[tuple[str, Message, int]]] = {
        "Controller": [
            # An access mode outside the enum: INTERNAL (ValueError from Mode.Name).
            ("CreateVolume", pb.CreateVolumeRequest(name="fuzz-new",
                volume_capabilities=[_cap(99)]), 0),
            ("ValidateVolumeCapabilities", pb.ValidateVolumeCapabilitiesRequest(
                volume_id=h.ext4, volume_capabilities=[_cap(-1)]), 0),
            ("GetCapacity", pb.GetCapacityRequest(volume_capabilities=[_cap(99)]), 0),
        ],
        "Node": [
            ("NodeStageVolume", pb.NodeStageVolumeRequest(volume_id=h.ext4,
                staging_target_path=h.staging, volume_capability=_cap(99)), 0),
            ("NodePublishVolume", pb.NodePublishVolumeRequest(volume_id=h.ext4,
                staging_target_path=h.staging, target_path=h.target,
                volume_capability=_cap(-1)), 1),
            # Flags that are no mount option reached mount(8): INTERNAL "mount failed".
            ("NodeStageVolume", pb.NodeStageVolumeRequest(volume_id=h.ext4,
                staging_target_path=h.staging, volume_capability=_cap(1, ["../canary"])), 0),
            ("NodeStageVolume", pb.NodeStageVolumeRequest(volume_id=h.ext4,
                staging_target_path=h.staging, volume_capability=_cap(1, ["a\\b", "."])), 0),
            ("NodePublishVolume", pb.NodePublishVolumeRequest(volume_id=h.ext4,
                staging_target_path=h.staging, target_path=h.target,
                volume_capability=_cap(1, ["\u202enoexec"])), 1),
            # A target whose name holds a character str.splitlines() breaks lines at
            # (mountinfo escapes only space, tab, newline and backslash): the mount table
            # was misread, the target's mount never found, and it stayed mounted.
            *[("NodePublishVolume", pb.NodePublishVolumeRequest(volume_id=h.ext4,
                staging_target_path=h.staging, target_path=f"{h.pods}/{name}",
                volume_capability=_cap()), 1)
              for name in ("line\u2028sep", "next\x85line", "group\x1dsep")],
            # Unpublish of a path the driver never published (a mount of someone else's).
            *[("NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(volume_id=h.ext4,
                target_path=path), setup) for path in h.paths for setup in (0, 2)],
            # Unstage at a wrong path must keep the record's real staging path.
            ("NodeUnstageVolume", pb.NodeUnstageVolumeRequest(volume_id=h.ext4,
                staging_target_path=h.paths[2]), 1),
            # Paths longer than PATH_MAX: INTERNAL (ENAMETOOLONG).
            ("NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(volume_id=h.ext4,
                volume_path=overlong), 1),
            ("NodeExpandVolume", pb.NodeExpandVolumeRequest(volume_id=h.ext4,
                volume_path=overlong), 1),
        ],
    }  # fmt: skip
    return [(_method(name), request, setup) for name, request, setup in cases.get(group, [])]
