"""Secrets (issue 6, group 7): canaries in every csi_secret field, in mount flags and in a
service account token reach no log line, traceback, status message or state file.

The driver runs as a subprocess at debug level (text and JSON logs) with a mount(8) shim
first on its PATH, so success paths, tool failures that echo their arguments, and an
unexpected exception (a tool writing bytes that are not UTF-8) all happen with the
canaries in play.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi.pb import csi_pb2
from tests.reliability.hostile import methods
from tests.reliability.secret_support import (
    CONTEXT,
    MARK,
    SECRETS,
    Recorder,
    Shim,
    canary,
    cap,
    driver_process,
    files_holding,
    secret_fields,
)
from tests.support.invariants import no_leftovers
from tests.support.kubelet import MIB

pb = csi_pb2
Code = grpc.StatusCode
UNKNOWN = "vol-" + "0" * 32
LOOP = {"volumeType": "loop", "fsType": "ext4"}
EPHEMERAL = {**CONTEXT, "csi.storage.k8s.io/ephemeral": "true", "volumeType": "directory"}


@pytest.fixture(autouse=True)
def _no_leaks(tmp_path: Path) -> Iterator[None]:
    with no_leftovers(tmp_path):
        yield


def sweep_secret_requests(call: Recorder, path: str) -> set[str]:
    """Every request type with a csi_secret field, secrets set, naming an unknown volume."""
    sent: set[str] = set()
    secret_types = {message for message, _ in secret_fields()}
    for method in methods():
        request = getattr(pb, method.input_type.name)()
        if request.DESCRIPTOR.full_name not in secret_types:
            continue
        fields = request.DESCRIPTOR.fields_by_name
        for name, field in fields.items():
            if field.GetOptions().Extensions[pb.csi_secret]:
                getattr(request, name).update(SECRETS)
        for name in ("volume_id", "source_volume_id", "snapshot_id", "group_snapshot_id"):
            if name in fields:
                setattr(request, name, UNKNOWN)
        for name in ("staging_target_path", "target_path", "volume_path"):
            if name in fields:
                setattr(request, name, path)
        for name in ("volume_context", "publish_context"):
            if name in fields:
                getattr(request, name).update(CONTEXT)
        if "volume_capability" in fields:
            request.volume_capability.CopyFrom(cap())
        if "volume_capabilities" in fields:
            request.volume_capabilities.append(cap())
        if "source_volume_ids" in fields:
            request.source_volume_ids.append(UNKNOWN)
        if "name" in fields:
            request.name = "sweep-" + method.name.lower()
        call(method.name, request)
        sent.add(request.DESCRIPTOR.full_name)
    return sent


def drive(call: Recorder, shim: Shim, kubelet: Path) -> None:
    """Success paths, then failing and crashing mounts, then clean-up; all with canaries."""
    dirs = {n: kubelet / n for n in ("s1", "s2", "s3", "pods")}
    for d in dirs.values():
        d.mkdir(parents=True)
    s1, s2, s3, pods = (str(d) for d in dirs.values())
    t1, t2, te = f"{pods}/t1", f"{pods}/t2", f"{pods}/eph"
    size = pb.CapacityRange(required_bytes=16 * MIB)

    def create(name: str, params: dict[str, str], **extra: Any) -> str:
        request = pb.CreateVolumeRequest(
            name=name, parameters=params, capacity_range=size, volume_capabilities=[cap()],
            secrets=SECRETS, **extra)  # fmt: skip
        reply = call("CreateVolume", request)
        assert reply is not None, call.codes[-1]
        return str(reply.volume.volume_id)  # type: ignore[attr-defined]

    def stage(volume_id: str, staging: str) -> None:
        call("NodeStageVolume", pb.NodeStageVolumeRequest(
            volume_id=volume_id, staging_target_path=staging, volume_capability=cap(),
            secrets=SECRETS, volume_context=CONTEXT, publish_context=CONTEXT))  # fmt: skip

    def publish(volume_id: str, target: str, context: dict[str, str] = CONTEXT) -> None:
        call("NodePublishVolume", pb.NodePublishVolumeRequest(
            volume_id=volume_id, staging_target_path=s1, target_path=target,
            volume_capability=cap(), secrets=SECRETS, volume_context=context))  # fmt: skip

    ext4, directory = create("sec-ext4", LOOP), create("sec-dir", {"volumeType": "directory"})
    call("ValidateVolumeCapabilities", pb.ValidateVolumeCapabilitiesRequest(volume_id=ext4,
         volume_capabilities=[cap()], volume_context=CONTEXT, secrets=SECRETS))  # fmt: skip
    call("ControllerExpandVolume", pb.ControllerExpandVolumeRequest(volume_id=ext4,
         capacity_range=pb.CapacityRange(required_bytes=24 * MIB), secrets=SECRETS))  # fmt: skip
    stage(ext4, s1)
    publish(ext4, t1)
    assert call.code("NodePublishVolume") is Code.OK, call.codes[-3:]
    call("NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(volume_id=ext4, volume_path=t1))
    call("NodeExpandVolume", pb.NodeExpandVolumeRequest(volume_id=ext4, volume_path=s1,
         capacity_range=pb.CapacityRange(required_bytes=32 * MIB), secrets=SECRETS))  # fmt: skip
    snap = call("CreateSnapshot", pb.CreateSnapshotRequest(
        name="sec-snap", source_volume_id=ext4, secrets=SECRETS))  # fmt: skip
    assert snap is not None, call.codes[-1]
    snap_id = snap.snapshot.snapshot_id  # type: ignore[attr-defined]
    call("GetSnapshot", pb.GetSnapshotRequest(snapshot_id=snap_id, secrets=SECRETS))
    call("ListSnapshots", pb.ListSnapshotsRequest(secrets=SECRETS))
    source = pb.VolumeContentSource(snapshot=pb.VolumeContentSource.SnapshotSource(
        snapshot_id=snap_id))  # fmt: skip
    restored = create("sec-restored", LOOP, volume_content_source=source)
    group = call("CreateVolumeGroupSnapshot", pb.CreateVolumeGroupSnapshotRequest(
        name="sec-group", source_volume_ids=[directory, restored], secrets=SECRETS))  # fmt: skip
    assert group is not None, call.codes[-1]
    group_id = group.group_snapshot.group_snapshot_id  # type: ignore[attr-defined]
    call("GetVolumeGroupSnapshot", pb.GetVolumeGroupSnapshotRequest(
        group_snapshot_id=group_id, secrets=SECRETS))  # fmt: skip
    call("DeleteVolumeGroupSnapshot", pb.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id=group_id, secrets=SECRETS))  # fmt: skip
    publish("csi-" + "e" * 64, te, EPHEMERAL)
    call("NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(volume_id="csi-" + "e" * 64,
                                                              target_path=te))  # fmt: skip
    # A mounted ext4 grows at its next stage if the driver lacks CAP_SYS_RESOURCE.
    grow = {(Code.FAILED_PRECONDITION, "NodeExpandVolume")}
    done = len(call.codes)
    failed = [x for x in call.codes if x[1] is not Code.OK and (x[1], x[0]) not in grow]
    assert not failed, f"success paths failed: {failed}"

    shim.mode("fail")  # every mount with a canary fails, echoing its arguments
    publish(ext4, t2)
    stage(directory, s2)
    stage(restored, s3)
    publish("csi-" + "f" * 64, te, EPHEMERAL)
    shim.mode("garbage")  # and now in bytes the driver cannot decode
    stage(restored, s3)
    shim.mode("pass")
    forced = [c for _, c, _ in call.codes[done:]]
    assert forced == [Code.INTERNAL] * 5, f"forced failures: {call.codes[done:]}"

    # Refused at the edge, canaries in the offending values.
    call("NodeStageVolume", pb.NodeStageVolumeRequest(volume_id=restored, staging_target_path=s3,
         volume_capability=cap((canary("comma") + ",x",)), secrets=SECRETS))  # fmt: skip
    call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=UNKNOWN,
         secrets={"k": canary("nul") + "\x00"}))  # fmt: skip
    call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=UNKNOWN,
         secrets={"k": canary("huge") * 100}))  # fmt: skip
    call("NodeStageVolume", pb.NodeStageVolumeRequest(volume_id=restored, staging_target_path=s3,
         volume_capability=cap((canary("long") * 40,)), secrets=SECRETS))  # fmt: skip

    call("NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(volume_id=ext4, target_path=t1))
    call("NodeUnstageVolume", pb.NodeUnstageVolumeRequest(volume_id=ext4, staging_target_path=s1))
    call("DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id=snap_id, secrets=SECRETS))
    for volume_id in (ext4, directory, restored):
        call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=volume_id, secrets=SECRETS))
        assert call.code("DeleteVolume") is Code.OK, call.codes[-1]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_canary_leaks(tmp_path: Path, log_format: str) -> None:
    shim, data, log = Shim(tmp_path / "shim"), tmp_path / "data", tmp_path / "driver.log"
    with driver_process(data, log, shim, log_format) as channel:
        call = Recorder(channel)
        drive(call, shim, tmp_path / "kubelet")
        kubelet_path = str(tmp_path / "kubelet")
        swept = sweep_secret_requests(call, kubelet_path)
    text = log.read_text(errors="replace")
    leaked_lines = [line for line in text.splitlines() if MARK in line]
    assert not leaked_lines, "canaries in the driver's log:\n" + "\n".join(leaked_lines[:5])
    leaked_status = [r for r in call.returned if MARK in r]
    assert not leaked_status, f"canaries returned to the caller: {leaked_status[:3]}"
    assert not files_holding(data, MARK), "canaries written under the data root"
    assert swept == {message for message, _ in secret_fields()}, "a secret-bearing request unsent"
    assert "event=rpc_request" in text, "debug request logging was not on"
    assert "UnicodeDecodeError" in text, "the unexpected-exception path was not taken"
    assert any("mount failed" in r and "***" in r for r in call.returned), "no redacted echo"
    if log_format == "json":
        assert all(json.loads(line) for line in text.splitlines() if line.strip())
    print(f"{log_format}: {len(call.codes)} calls, {len(text.splitlines())} log lines, 0 leaks")
