"""Secrets (issue 6, group 7): canaries in every csi_secret field, in mount flags and in a
service account token reach no log line, traceback, status message, trailer or state file.

The driver runs as a subprocess at debug level (text and JSON logs), restarted between
phases (secret_support.SecretDriver), with the canaries in play on every path:

- success: binds take canary mount flags (filesystem options a bind ignores) on every
  publish of an ext4, a directory and an ephemeral volume; an ext4 stage takes them as
  values the kernel accepts (a quota file name) or the option parser consumes;
- refused options: canary flags on an ext4 stage are refused by the kernel (EINVAL) or by
  the option parser, INVALID_ARGUMENT with a message that names no option;
- forced failures: CSI_FAIL_SYSCALL fails mount:fs, mount:bind, mount:remount, umount and
  the loop steps, each INTERNAL naming the step;
- the unexpected-exception path: a mkfs.ext4 that writes bytes which are not UTF-8 makes
  the strict decoding in csi.host.run raise UnicodeDecodeError, INTERNAL with a log
  reference;
- refusals at the edge (a comma, a NUL, oversized secrets and flags);
- and a sweep of every request type that has a csi_secret field.

The mount(8) shim this test used to put on PATH, which echoed its canary arguments on
failure, has no successor: mounts fork nothing now, their errors are built by the seam
(csi.host.kernel) from the step, the target and the errno, never the options, and no
forked tool is handed a mount option. So the old check that a tool's echo came back
redacted ("***") is gone; the forced failures instead must name the injected step, which
proves the failure path ran with the canaries in the request. The ext4 stage that succeeds
needs a kernel with quota support (CONFIG_QUOTA) for its usrjquota= value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi.host.kernel import FAULT_ENV
from csi.host.mount import mounts_at
from csi.pb import csi_pb2
from tests.reliability.hostile import methods
from tests.reliability.secret_support import (
    CONTEXT,
    FLAGS,
    FS_FLAGS,
    MARK,
    PARSER_REFUSED,
    SECRETS,
    Recorder,
    SecretDriver,
    canary,
    cap,
    files_holding,
    garbage_shim,
    secret_driver,
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


def drive(driver: SecretDriver, kubelet: Path, shims: Path) -> None:
    """Success paths, refused options, forced and crashing steps, then clean-up; all with
    canaries, the driver restarted for each set of faults."""
    call = driver.call
    dirs = {n: kubelet / n for n in ("s1", "s2", "s3", "pods")}
    for d in dirs.values():
        d.mkdir(parents=True)
    s1, s2, s3, pods = (str(d) for d in dirs.values())
    t1, t2, t3, t4, te = (f"{pods}/{n}" for n in ("t1", "t2", "t3", "t4", "eph"))
    size = pb.CapacityRange(required_bytes=16 * MIB)

    def create(name: str, params: dict[str, str], **extra: Any) -> str | None:
        request = pb.CreateVolumeRequest(
            name=name, parameters=params, capacity_range=size, volume_capabilities=[cap()],
            secrets=SECRETS, **extra)  # fmt: skip
        reply = call("CreateVolume", request)
        return None if reply is None else str(reply.volume.volume_id)  # type: ignore[attr-defined]

    def stage(volume_id: str, staging: str, flags: tuple[str, ...] = FS_FLAGS) -> None:
        call("NodeStageVolume", pb.NodeStageVolumeRequest(
            volume_id=volume_id, staging_target_path=staging, volume_capability=cap(flags),
            secrets=SECRETS, volume_context=CONTEXT, publish_context=CONTEXT))  # fmt: skip

    def publish(volume_id: str, staging: str, target: str, context: dict[str, str] = CONTEXT
                ) -> None:  # fmt: skip
        call("NodePublishVolume", pb.NodePublishVolumeRequest(
            volume_id=volume_id, staging_target_path=staging, target_path=target,
            volume_capability=cap(), secrets=SECRETS, volume_context=context,
            publish_context=CONTEXT))  # fmt: skip

    def unpublish(volume_id: str, target: str) -> None:
        call("NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(
            volume_id=volume_id, target_path=target))  # fmt: skip

    # -- success paths: canary flags wherever the kernel takes them ---------------------
    ext4, directory = create("sec-ext4", LOOP), create("sec-dir", {"volumeType": "directory"})
    assert ext4 is not None, call.codes[-2]
    assert directory is not None, call.codes[-1]
    call("ValidateVolumeCapabilities", pb.ValidateVolumeCapabilitiesRequest(volume_id=ext4,
         volume_capabilities=[cap()], volume_context=CONTEXT, secrets=SECRETS))  # fmt: skip
    call("ControllerExpandVolume", pb.ControllerExpandVolumeRequest(volume_id=ext4,
         capacity_range=pb.CapacityRange(required_bytes=24 * MIB), secrets=SECRETS))  # fmt: skip
    stage(ext4, s1)  # FS_FLAGS: a quota file name ext4 takes, options the parser consumes
    assert call.code("NodeStageVolume") is Code.OK, call.codes[-1]
    # The kernel took the canary: ext4 shows the quota file name among its options.
    assert any(MARK in o for m in mounts_at(s1) for o in m.super_options), mounts_at(s1)
    publish(ext4, s1, t1)  # FLAGS on a bind: ignored options, and a remount for nosuid
    assert call.code("NodePublishVolume") is Code.OK, call.codes[-1]
    stage(directory, s2, FLAGS)
    publish(directory, s2, t3)
    assert call.code("NodePublishVolume") is Code.OK, call.codes[-1]
    call("NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(volume_id=ext4, volume_path=t1))
    call("NodeExpandVolume", pb.NodeExpandVolumeRequest(volume_id=ext4, volume_path=s1,
         capacity_range=pb.CapacityRange(required_bytes=32 * MIB), secrets=SECRETS,
         volume_capability=cap(FS_FLAGS)))  # fmt: skip
    snap = call("CreateSnapshot", pb.CreateSnapshotRequest(
        name="sec-snap", source_volume_id=ext4, secrets=SECRETS))  # fmt: skip
    assert snap is not None, call.codes[-1]
    snap_id = snap.snapshot.snapshot_id  # type: ignore[attr-defined]
    call("GetSnapshot", pb.GetSnapshotRequest(snapshot_id=snap_id, secrets=SECRETS))
    call("ListSnapshots", pb.ListSnapshotsRequest(secrets=SECRETS))
    source = pb.VolumeContentSource(snapshot=pb.VolumeContentSource.SnapshotSource(
        snapshot_id=snap_id))  # fmt: skip
    restored = create("sec-restored", LOOP, volume_content_source=source)
    assert restored is not None, call.codes[-1]
    group = call("CreateVolumeGroupSnapshot", pb.CreateVolumeGroupSnapshotRequest(
        name="sec-group", source_volume_ids=[directory, restored], secrets=SECRETS))  # fmt: skip
    assert group is not None, call.codes[-1]
    group_id = group.group_snapshot.group_snapshot_id  # type: ignore[attr-defined]
    call("GetVolumeGroupSnapshot", pb.GetVolumeGroupSnapshotRequest(
        group_snapshot_id=group_id, secrets=SECRETS))  # fmt: skip
    call("DeleteVolumeGroupSnapshot", pb.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id=group_id, secrets=SECRETS))  # fmt: skip
    publish("csi-" + "e" * 64, "", te, EPHEMERAL)
    unpublish("csi-" + "e" * 64, te)
    # A mounted ext4 grows at its next stage if the driver lacks CAP_SYS_RESOURCE.
    grow = {(Code.FAILED_PRECONDITION, "NodeExpandVolume")}
    failed = [x for x in call.codes if x[1] is not Code.OK and (x[1], x[0]) not in grow]
    assert not failed, f"success paths failed: {failed}"

    # -- refused options: by the kernel (EINVAL) and by the option parser ---------------
    done = len(call.codes)
    stage(restored, s3, FLAGS)
    stage(restored, s3, PARSER_REFUSED)
    refused = call.codes[done:]
    assert [c for _, c, _ in refused] == [Code.INVALID_ARGUMENT] * 2, refused
    assert "did not accept the mount flags" in refused[0][2], refused[0]
    assert "mount option 2 of 2" in refused[1][2], refused[1]

    # -- forced failures: each step of the seam fails on demand -------------------------
    # (selector for CSI_FAIL_SYSCALL, calls to make); each call fails INTERNAL, its message
    # naming the step that failed. The driver restarts for every selector.
    expand = pb.ControllerExpandVolumeRequest(volume_id=ext4, secrets=SECRETS,
        capacity_range=pb.CapacityRange(required_bytes=40 * MIB))  # fmt: skip
    phases: list[tuple[str, str, list[Callable[[], object]]]] = [
        ("mount:fs", "mount:fs", [lambda: stage(restored, s3)]),
        ("loop", "loop:find", [lambda: stage(restored, s3)]),
        ("loop:configure", "loop:configure", [lambda: stage(restored, s3)]),
        ("loop:capacity", "loop:capacity", [lambda: call("ControllerExpandVolume", expand)]),
        ("mount:bind", "mount:bind", [
            lambda: publish(ext4, s1, t2),
            lambda: publish(directory, s2, t4),
            lambda: publish("csi-" + "f" * 64, "", te, EPHEMERAL),
        ]),
        ("mount:remount", "mount:remount", [lambda: publish(ext4, s1, t2)]),
        ("umount", "umount", [lambda: unpublish(ext4, t1), lambda: unpublish(directory, t3)]),
    ]  # fmt: skip
    for selector, step, calls in phases:
        driver.phase(selector)
        done = len(call.codes)
        for each in calls:
            each()
        made = call.codes[done:]
        assert len(made) == len(calls), (selector, made)
        for method, code, details in made:
            assert code is Code.INTERNAL, (selector, method, code, details)
            assert f"(injected by {FAULT_ENV}={step})" in details, (selector, method, details)

    # -- the unexpected-exception path: a tool's output the driver cannot decode --------
    driver.phase(path_first=garbage_shim(shims))
    assert create("sec-garbage", LOOP) is None
    assert call.codes[-1][1] is Code.INTERNAL, call.codes[-1]
    assert "see driver log" in call.codes[-1][2], call.codes[-1]

    # -- refused at the edge, canaries in the offending values --------------------------
    driver.phase()
    done = len(call.codes)
    call("NodeStageVolume", pb.NodeStageVolumeRequest(volume_id=restored, staging_target_path=s3,
         volume_capability=cap((canary("comma") + ",x",)), secrets=SECRETS))  # fmt: skip
    call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=UNKNOWN,
         secrets={"k": canary("nul") + "\x00"}))  # fmt: skip
    call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=UNKNOWN,
         secrets={"k": canary("huge") * 100}))  # fmt: skip
    call("NodeStageVolume", pb.NodeStageVolumeRequest(volume_id=restored, staging_target_path=s3,
         volume_capability=cap((canary("long") * 40,)), secrets=SECRETS))  # fmt: skip
    edge = call.codes[done:]
    assert [c for _, c, _ in edge] == [Code.INVALID_ARGUMENT] * 4, edge

    # -- clean-up, and the one step only an unstage takes --------------------------------
    for volume_id, target in ((ext4, t1), (directory, t3)):
        unpublish(volume_id, target)
        assert call.code("NodeUnpublishVolume") is Code.OK, call.codes[-1]
    unstage = pb.NodeUnstageVolumeRequest(volume_id=ext4, staging_target_path=s1)
    driver.phase("loop:clear")
    call("NodeUnstageVolume", unstage)
    assert call.codes[-1][1] is Code.INTERNAL, call.codes[-1]
    assert f"(injected by {FAULT_ENV}=loop:clear)" in call.codes[-1][2], call.codes[-1]
    driver.phase()
    call("NodeUnstageVolume", unstage)
    call("NodeUnstageVolume", pb.NodeUnstageVolumeRequest(
        volume_id=directory, staging_target_path=s2))  # fmt: skip
    assert [c for _, c, _ in call.codes[-2:]] == [Code.OK] * 2, call.codes[-2:]
    call("DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id=snap_id, secrets=SECRETS))
    for volume_id in (ext4, directory, restored):
        call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=volume_id, secrets=SECRETS))
        assert call.code("DeleteVolume") is Code.OK, call.codes[-1]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_canary_leaks(tmp_path: Path, log_format: str) -> None:
    call, data = Recorder(), tmp_path / "data"
    with secret_driver(data, tmp_path / "logs", log_format, call) as driver:
        drive(driver, tmp_path / "kubelet", tmp_path / "shims")
        swept = sweep_secret_requests(call, str(tmp_path / "kubelet"))
        text = driver.log_text()
    leaked_lines = [line for line in text.splitlines() if MARK in line]
    assert not leaked_lines, "canaries in the driver's log:\n" + "\n".join(leaked_lines[:5])
    leaked_status = [r for r in call.returned if MARK in r]
    assert not leaked_status, f"canaries returned to the caller: {leaked_status[:3]}"
    assert not files_holding(data, MARK), "canaries written under the data root"
    assert swept == {message for message, _ in secret_fields()}, "a secret-bearing request unsent"
    assert "event=rpc_request" in text, "debug request logging was not on"
    assert "UnicodeDecodeError" in text, "the unexpected-exception path was not taken"
    if log_format == "json":
        assert all(json.loads(line) for line in text.splitlines() if line.strip())
    print(f"{log_format}: {len(call.codes)} calls, {len(text.splitlines())} log lines, 0 leaks")
