"""Fuzzing (issue 6, group 8): generated requests for every Identity, Controller,
GroupController and Node RPC: no hang, no crash, no UNKNOWN or INTERNAL status, nothing
outside the data root touched.

One in-process driver serves the module, holding three volumes (ext4, directory, block)
and a snapshot. Each example may first stage (and publish) the ext4 volume, then sends one
generated request; afterwards everything the request made is undone through the API and
the host is compared with how it was: canary, files beside the data root, mounts and loop
devices anywhere on the machine (other pytest runs' directories excepted).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csi.pb import csi_pb2, csi_pb2_grpc
from tests.helpers import RunningDriver, block_capability, need_root, running_driver
from tests.integration.support import force_cleanup, loop_devices, mounts, mounts_under
from tests.reliability.fuzz_strategies import Hints, request_for
from tests.reliability.hostile import DIRECTORY, EXT4, MIB, Caller, listing, make_canary, methods
from tests.reliability.hostile import rpc as rpc_for
from tests.reliability.hostile_values import UNKNOWN_VOLUME, hostile_strings

pb = csi_pb2
Code = grpc.StatusCode
GROUPS = ("Identity", "Controller", "GroupController", "Node")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))  # per group; raise it to dig deeper
TIMEOUT = 10.0
OTHER_RUNS = "/tmp/pytest-of-"  # concurrent test runs may mount there


@dataclass
class Fuzz:
    rd: RunningDriver
    caller: Caller
    root: Path
    canary: Path
    staging: Path  # the ext4 volume's staging path when an example stages it
    target: Path
    ext4: str  # the volume an example may stage and publish first
    base: frozenset[str]  # volume and snapshot IDs that outlive every example
    hints: Hints


def host_view() -> tuple[frozenset[str], frozenset[str]]:
    """Mount points and loop backing files on the machine, other test runs aside."""
    points = frozenset(m.mount_point for m in mounts() if not m.mount_point.startswith(OTHER_RUNS))
    backing = frozenset(b for b in loop_devices().values() if not b.startswith(OTHER_RUNS))
    return points, backing


def make_base(caller: Caller) -> list[str]:
    """The module's snapshot and volumes (directory, block, ext4); idempotent, so an
    example that deleted one gets it back, with the same ID (IDs come from names)."""
    ctl = caller.client.controller
    block = ctl.CreateVolume(pb.CreateVolumeRequest(
        name="fuzz-block", parameters={"volumeType": "loop"},
        volume_capabilities=[block_capability()])).volume.volume_id  # fmt: skip
    directory = caller.create("fuzz-dir", DIRECTORY)
    snap = pb.CreateSnapshotRequest(name="fuzz-snap", source_volume_id=directory)
    snapshot = ctl.CreateSnapshot(snap).snapshot.snapshot_id
    return [snapshot, directory, block, caller.create("fuzz-ext4", EXT4)]


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    need_root()
    root = tmp_path_factory.mktemp("fuzz")
    canary, data, links = make_canary(root / "canary"), root / "data", root / "links"
    links.mkdir()
    (links / "to-canary").symlink_to(canary)
    overrides = {"default_volume_size": 16 * MIB, "max_volume_size": 256 * MIB}
    try:
        with running_driver(data, capacity_limit=2048 * MIB, **overrides) as rd:
            caller = Caller(rd.client, root / "kubelet")
            ids = make_base(caller)
            staging, target = caller.staging("fuzz"), caller.target("fuzz")
            pods = str(target.parent.parent)
            paths = [str(staging), str(target), str(links / "to-canary"), str(data), "rel/x"]
            paths += [str(data / "volumes" / ids[1]), f"{pods}/new", "/a/../b", "/x\x00y"]
            junk = list(hostile_strings(canary).values())
            names = ["fuzz-dir", "fuzz-ext4", "fuzz-new", "fuzz-new-2"]
            hints = Hints([*ids, "csi-" + "a" * 64, UNKNOWN_VOLUME], names, paths, pods, junk,
                          ext4=ids[-1], directory=ids[1], snapshot=ids[0],
                          staging=str(staging), target=str(target))  # fmt: skip
            yield Fuzz(rd, caller, root, canary, staging, target, ids[-1], frozenset(ids), hints)
    finally:
        leaked = mounts_under(root)
        force_cleanup(root)
    assert not leaked, f"mounts left behind: {leaked}"


def reset(f: Fuzz) -> None:
    """Undo whatever the example made, through the driver's own API."""
    c, group_stub = f.rd.client, csi_pb2_grpc.GroupControllerStub(f.rd.client.channel)
    volumes, snapshots = f.rd.driver.volumes.store, f.rd.driver.snapshots.store
    for _ in range(3):
        for record in volumes.all():
            for target in record.targets:
                _quiet(lambda t=target, r=record: f.caller.unpublish(r.volume_id, Path(t)))
            if record.staging_path:
                _quiet(lambda r=record: f.caller.unstage(r.volume_id, Path(r.staging_path)))
        for point in mounts_under(f.caller.root):  # staged where the record no longer says
            for record in volumes.all():
                _quiet(lambda p=point, r=record: f.caller.unstage(r.volume_id, Path(p)))
        for group in f.rd.driver.groups.store.all():
            drop = pb.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=group.record_id)
            _quiet(lambda r=drop: group_stub.DeleteVolumeGroupSnapshot(r))
        for snap in snapshots.all():
            if snap.snapshot_id not in f.base:
                request = pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id)
                _quiet(lambda r=request: c.controller.DeleteSnapshot(r))
        for record in volumes.all():
            if record.volume_id not in f.base:
                _quiet(lambda r=record: f.caller.delete(r.volume_id))
        left = {r.volume_id for r in volumes.all()} | {s.snapshot_id for s in snapshots.all()}
        if left == f.base and not mounts_under(f.root) and not node_in_use(f):
            break
    if left != f.base:
        make_base(f.caller)
    f.staging.mkdir(parents=True, exist_ok=True)
    f.target.parent.mkdir(parents=True, exist_ok=True)


def node_in_use(f: Fuzz) -> bool:
    return any(r.in_use for r in f.rd.driver.volumes.store.all())


def _quiet(call: object) -> None:
    with contextlib.suppress(grpc.RpcError):
        call()  # type: ignore[operator]


class Internals(logging.Handler):
    """The exception behind each INTERNAL, by the reference the caller is given."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.by_ref: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        ref = re.search(r"ref=(\w+)", record.getMessage())
        if ref and record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            self.by_ref[ref.group(1)] = f"{type(error).__name__}: {error}"

    def known(self, details: str) -> str | None:
        """Which known bug (an xfail in test_bad_input_edges) an INTERNAL is, if any."""
        if details.startswith("mount failed"):
            return "flags reach mount(8)"
        ref = re.search(r"ref (\w+)", details)
        cause = self.by_ref.get(ref.group(1), "") if ref else ""
        if re.match(r"ValueError: Enum Mode has no name defined", cause):
            return "unknown access mode"
        return None


@pytest.mark.parametrize("group", GROUPS)
def test_fuzz(fuzz: Fuzz, group: str) -> None:
    f, seen = fuzz, Counter[str]()
    calls = {m.name: rpc_for(f.rd.client.channel, m) for m in methods(group)}
    canary, beside = listing(f.canary), set(os.listdir(f.root))
    host = host_view()
    internals = Internals()
    logging.getLogger("csi.rpc").addHandler(internals)
    cases = st.sampled_from(methods(group)).flatmap(
        lambda m: st.tuples(st.just(m), request_for(m, f.hints), st.integers(0, 2))
    )

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=cases)
    def one(case: tuple[MethodDescriptor, Message, int]) -> None:
        method, request, setup = case
        if group == "Node" and setup:  # give publish, unstage, stats a staged volume
            f.caller.stage(f.ext4, f.staging)
            if setup == 2:
                f.caller.publish(f.ext4, f.staging, f.target)
        try:
            code, details = _call(calls[method.name], request)
        finally:
            reset(f)
        seen[f"{method.name}:{code.name}"] += 1
        assert code not in (Code.UNKNOWN, Code.DEADLINE_EXCEEDED, Code.UNAVAILABLE), details
        if code is Code.INTERNAL:
            known = internals.known(details)
            assert known, f"{method.name}: INTERNAL {details} {internals.by_ref}"
            seen[f"known bug: {known}"] += 1
        assert listing(f.canary) == canary, "the canary changed"
        assert set(os.listdir(f.root)) == beside, "files appeared beside the data root"
        assert host_view() == host, "mounts or loop devices changed on the host"

    try:
        one()
    finally:
        logging.getLogger("csi.rpc").removeHandler(internals)
    print(f"{group}: {sum(seen.values())} examples, {dict(sorted(seen.items()))}")


def _call(call: object, request: Message) -> tuple[grpc.StatusCode, str]:
    try:
        call(request, timeout=TIMEOUT)  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return Code.OK, ""
