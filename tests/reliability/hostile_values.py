"""Hostile request values, and a sweep that records every status that is not allowed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from csi.pb import csi_pb2, csi_pb2_grpc
from tests.reliability.hostile import EXT4
from tests.support.driver import Client
from tests.support.kubelet import mount_capability
from tests.support.status import status

Code = grpc.StatusCode
INVALID = frozenset({Code.INVALID_ARGUMENT})
NEVER = frozenset({Code.UNKNOWN, Code.INTERNAL})
pb = csi_pb2
SOURCE = pb.VolumeContentSource
UNKNOWN_VOLUME = "vol-" + "0" * 32  # follows the ID grammar, names nothing

# Values a CreateVolume/CreateSnapshot name may legitimately take: the driver hashes a name
# into an ID, so these are harmless, as long as the ID and paths stay in the grammar.
HARMLESS_NAMES = frozenset({"fullwidth", "combining", "upper"})
# Paths that are well formed (absolute, no '..', outside the data root): refusing them is
# the spec's business (NOT_FOUND, FAILED_PRECONDITION), not INVALID_ARGUMENT's.
WELL_FORMED_PATHS = frozenset({"absolute", "canary"})


def hostile_strings(canary: Path) -> dict[str, str]:
    return {
        "parent-canary": "../canary",
        "parent-twice": "../../",
        "absolute": "/abs/path",
        "canary": str(canary),
        "nul": "a\x00b",
        "backslash": "a\\b",
        "long": "x" * 10_000,
        "rtl-override": "\u202evol-gpj.exe",
        "fullwidth": "".join(chr(ord(c) + 0xFEE0) for c in "vol") + "-canary",
        "combining": "vol-c\u0301anary",
        "dot": ".",
        "dotdot": "..",
        "empty": "",
        "newline": "vol\ncanary",
        "id-traversal": "vol-0/../../canary",
        "upper": "VOL-CANARY",
    }


def hostile_paths(canary: Path, links: Path, data_dir: Path) -> dict[str, str]:
    """Node paths: the hostile strings plus symlinks and places inside the data root.

    ``links`` must hold ``to-canary`` (a symlink to the canary) and ``to-data`` (one to
    the data root).
    """
    return {
        **hostile_strings(canary),
        "link-to-canary": str(links / "to-canary"),
        "link-to-data": str(links / "to-data"),
        "through-link-into-data": str(links / "to-data" / "volumes" / "x"),
        "data-root": str(data_dir),
        "inside-data": str(data_dir / "images"),
        "data-socket": str(data_dir / "csi.sock"),
        "state-file": str(data_dir / "state" / "volumes" / f"{UNKNOWN_VOLUME}.json"),
        "long-component": "/" + "x" * 300,
        "long-path": "/x" * 3000,
    }


def id_calls(
    client: Client,
    group: csi_pb2_grpc.GroupControllerStub,
    v: str,
    staging: str,
    target: str,
    lookup: frozenset[Code],
    delete: frozenset[Code],
    first_page: frozenset[Code],
) -> list[tuple[str, Callable[[], object], frozenset[Code]]]:
    """Every RPC that takes a volume, snapshot or group ID, with ``v`` as that ID."""
    ctl, node, cap = client.controller, client.node, mount_capability()
    vol_source = SOURCE(volume=SOURCE.VolumeSource(volume_id=v))
    snap_source = SOURCE(snapshot=SOURCE.SnapshotSource(snapshot_id=v))
    unimplemented = frozenset({Code.UNIMPLEMENTED})
    listing_ok = frozenset({Code.OK, Code.INVALID_ARGUMENT})
    return [
        ("CreateVolume(source volume)", lambda: ctl.CreateVolume(
            pb.CreateVolumeRequest(name="from-bad", volume_capabilities=[cap],
                                   parameters=EXT4, volume_content_source=vol_source)), lookup),
        ("CreateVolume(source snapshot)", lambda: ctl.CreateVolume(
            pb.CreateVolumeRequest(name="from-bad", volume_capabilities=[cap],
                                   parameters=EXT4, volume_content_source=snap_source)), lookup),
        ("DeleteVolume", lambda: ctl.DeleteVolume(pb.DeleteVolumeRequest(volume_id=v)),
         delete),
        ("ControllerGetVolume", lambda: ctl.ControllerGetVolume(
            pb.ControllerGetVolumeRequest(volume_id=v)), lookup),
        ("ValidateVolumeCapabilities", lambda: ctl.ValidateVolumeCapabilities(
            pb.ValidateVolumeCapabilitiesRequest(volume_id=v, volume_capabilities=[cap])),
         lookup),
        ("ControllerExpandVolume", lambda: ctl.ControllerExpandVolume(
            pb.ControllerExpandVolumeRequest(
                volume_id=v, capacity_range=pb.CapacityRange(required_bytes=1 << 30))),
         lookup),
        ("ControllerPublishVolume", lambda: ctl.ControllerPublishVolume(
            pb.ControllerPublishVolumeRequest(volume_id=v, node_id="n",
                                              volume_capability=cap)), unimplemented),
        ("CreateSnapshot", lambda: ctl.CreateSnapshot(
            pb.CreateSnapshotRequest(name="snap-of-bad", source_volume_id=v)), lookup),
        ("DeleteSnapshot", lambda: ctl.DeleteSnapshot(
            pb.DeleteSnapshotRequest(snapshot_id=v)), delete),
        ("GetSnapshot", lambda: ctl.GetSnapshot(pb.GetSnapshotRequest(snapshot_id=v)),
         lookup),
        ("ListSnapshots(snapshot_id)", lambda: ctl.ListSnapshots(
            pb.ListSnapshotsRequest(snapshot_id=v)), listing_ok),
        ("ListSnapshots(source)", lambda: ctl.ListSnapshots(
            pb.ListSnapshotsRequest(source_volume_id=v)), listing_ok),
        ("ListSnapshots(token)", lambda: ctl.ListSnapshots(
            pb.ListSnapshotsRequest(starting_token=v)),
         first_page),
        ("ListVolumes(token)", lambda: ctl.ListVolumes(
            pb.ListVolumesRequest(starting_token=v)),
         first_page),
        ("NodeStageVolume", lambda: node.NodeStageVolume(pb.NodeStageVolumeRequest(
            volume_id=v, staging_target_path=staging, volume_capability=cap)), lookup),
        ("NodeUnstageVolume", lambda: node.NodeUnstageVolume(
            pb.NodeUnstageVolumeRequest(volume_id=v, staging_target_path=staging)), lookup),
        ("NodePublishVolume", lambda: node.NodePublishVolume(pb.NodePublishVolumeRequest(
            volume_id=v, staging_target_path=staging, target_path=target,
            volume_capability=cap)), lookup),
        ("NodeUnpublishVolume", lambda: node.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=v, target_path=target)), lookup),
        ("NodeGetVolumeStats", lambda: node.NodeGetVolumeStats(
            pb.NodeGetVolumeStatsRequest(volume_id=v, volume_path=staging)), lookup),
        ("NodeExpandVolume", lambda: node.NodeExpandVolume(
            pb.NodeExpandVolumeRequest(volume_id=v, volume_path=staging)), lookup),
        ("CreateVolumeGroupSnapshot", lambda: group.CreateVolumeGroupSnapshot(
            pb.CreateVolumeGroupSnapshotRequest(name="grp", source_volume_ids=[v])), lookup),
        ("DeleteVolumeGroupSnapshot", lambda: group.DeleteVolumeGroupSnapshot(
            pb.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=v)), delete),
        ("GetVolumeGroupSnapshot", lambda: group.GetVolumeGroupSnapshot(
            pb.GetVolumeGroupSnapshotRequest(group_snapshot_id=v)), lookup),
    ]  # fmt: skip


def node_calls(
    node: csi_pb2_grpc.NodeStub,
    vol: str,
    p: str,
    staging: str,
    target: str,
    cap: csi_pb2.VolumeCapability,
) -> list[tuple[str, Callable[[], object]]]:
    """Each node RPC with the hostile path ``p`` in one path field."""
    return [
        ("NodeStageVolume", lambda: node.NodeStageVolume(pb.NodeStageVolumeRequest(
            volume_id=vol, staging_target_path=p, volume_capability=cap))),
        ("NodeUnstageVolume", lambda: node.NodeUnstageVolume(pb.NodeUnstageVolumeRequest(
            volume_id=vol, staging_target_path=p))),
        ("NodePublishVolume(staging)", lambda: node.NodePublishVolume(
            pb.NodePublishVolumeRequest(volume_id=vol, staging_target_path=p,
                                        target_path=target, volume_capability=cap))),
        ("NodePublishVolume(target)", lambda: node.NodePublishVolume(
            pb.NodePublishVolumeRequest(volume_id=vol, staging_target_path=staging,
                                        target_path=p, volume_capability=cap))),
        ("NodeUnpublishVolume", lambda: node.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=vol, target_path=p))),
        ("NodeGetVolumeStats", lambda: node.NodeGetVolumeStats(
            pb.NodeGetVolumeStatsRequest(volume_id=vol, volume_path=p))),
        ("NodeExpandVolume", lambda: node.NodeExpandVolume(
            pb.NodeExpandVolumeRequest(volume_id=vol, volume_path=p))),
    ]  # fmt: skip


@dataclass
class Sweep:
    """Calls made with hostile values; statuses outside the allowed set are collected."""

    failures: list[str] = field(default_factory=list)
    tried: int = 0
    refused: int = 0

    def expect(
        self,
        what: str,
        call: Callable[[], object],
        allowed: frozenset[Code] = INVALID,
        on_ok: Callable[[], object] | None = None,
    ) -> Code:
        code, details = status(call)
        self.record(what, code, details, allowed)
        if code is Code.OK and on_ok is not None:
            on_ok()
        return code

    def record(self, what: str, code: Code, details: str, allowed: frozenset[Code]) -> None:
        self.tried += 1
        self.refused += code is not Code.OK
        if code not in allowed or code in NEVER:
            self.failures.append(f"{what}: {code.name} {details[:160]!r}")

    def check(self) -> None:
        print(f"hostile calls: {self.tried} tried, {self.refused} refused")
        assert not self.failures, "unexpected statuses:\n" + "\n".join(self.failures)
