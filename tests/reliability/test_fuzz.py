"""Fuzzing (issue 6, group 8): generated requests for every Identity, Controller,
GroupController and Node RPC: no hang, no crash, no UNKNOWN or INTERNAL status (none is
excused), nothing outside the data root touched.

One in-process driver serves the module, holding three volumes (ext4, directory, block)
and a snapshot. Each example may first stage (and publish) the ext4 volume, then sends one
generated request; afterwards everything the request made is undone through the API and
what the test made is compared with how it was: the canary, files beside the data root, a
mount of the test's own that the driver never made, and the mounts and loop devices under
the test's root. Nothing else on the machine is looked at: another process mounting or
attaching elsewhere cannot fail this test (the generated node paths never leave the root).

Each run draws a fresh seed (printed in pytest's header and in every failure);
``LOCALVOL_FUZZ_SEED=<seed>`` replays a run. Requests that once found a bug are replayed
first on every run (``regressions``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st

from csi.pb import csi_pb2, csi_pb2_grpc
from tests.reliability.fuzz_strategies import SEED, Hints, regressions, request_for
from tests.reliability.hostile import DIRECTORY, EXT4, Entry, listing, make_canary, methods
from tests.reliability.hostile import rpc as rpc_for
from tests.reliability.hostile_values import UNKNOWN_VOLUME, hostile_strings
from tests.support.driver import RunningDriver, running_driver
from tests.support.host import (
    backing_names_under,
    live,
    loop_is_dying,
    loops_under,
    mounts_under,
)
from tests.support.invariants import no_leftovers
from tests.support.kubelet import MIB, Kubelet, block_capability
from tests.support.prerequisites import need_root

pb = csi_pb2
Code = grpc.StatusCode
GROUPS = ("Identity", "Controller", "GroupController", "Node")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))  # per group; raise it to dig deeper
TIMEOUT = 10.0


@dataclass
class Fuzz:
    rd: RunningDriver
    caller: Kubelet
    root: Path
    canary: Path
    foreign: Path  # a mount of the test's own, in the hints' paths: it must stay mounted
    staging: Path  # the ext4 volume's staging path when an example stages it
    target: Path
    ext4: str  # the volume an example may stage and publish first
    base: frozenset[str]  # volume and snapshot IDs that outlive every example
    hints: Hints


def host_view(root: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Mount points under the test's root and loop devices backed by files under it, but
    for those whose detach is pending (``tests.support.host.live``)."""
    return tuple(sorted(mounts_under(root))), tuple(live(loops_under(root)))


def make_base(caller: Kubelet) -> list[str]:
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
    foreign = root / "foreign"
    foreign.mkdir()
    overrides = {"default_volume_size": 16 * MIB, "max_volume_size": 256 * MIB}
    with no_leftovers(root):
        subprocess.run(["mount", "-t", "tmpfs", "fuzz-foreign", str(foreign)], check=True)
        try:
            with running_driver(data, capacity_limit=2048 * MIB, **overrides) as rd:
                yield fuzz_on(rd, root, canary, foreign)
        finally:
            subprocess.run(["umount", "--", str(foreign)], check=False)


def fuzz_on(rd: RunningDriver, root: Path, canary: Path, foreign: Path) -> Fuzz:
    data, links = rd.data_dir, root / "links"
    caller = Kubelet(rd.client, root / "kubelet", data)
    ids = make_base(caller)
    staging, target = caller.staging("fuzz"), caller.target("fuzz")
    pods = str(target.parent.parent)
    paths = [str(staging), str(target), str(links / "to-canary"), str(data), "rel/x"]
    paths += [str(data / "volumes" / ids[1]), f"{pods}/new", "/a/../b", "/x\x00y"]
    paths.append(str(foreign))
    junk = list(hostile_strings(canary).values())
    names = ["fuzz-dir", "fuzz-ext4", "fuzz-new", "fuzz-new-2"]
    hints = Hints([*ids, "csi-" + "a" * 64, UNKNOWN_VOLUME], names, paths, pods, junk,
                  ext4=ids[-1], directory=ids[1], snapshot=ids[0],
                  staging=str(staging), target=str(target))  # fmt: skip
    return Fuzz(rd, caller, root, canary, foreign, staging, target, ids[-1], frozenset(ids), hints)


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
    """The exception behind each INTERNAL, by the reference the caller is given: what a
    failure reports, so the bug can be found (no INTERNAL is accepted)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.by_ref: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        ref = re.search(r"ref=(\w+)", record.getMessage())
        if ref and record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            self.by_ref[ref.group(1)] = f"{type(error).__name__}: {error}"

    def cause(self, details: str) -> str:
        ref = re.search(r"ref (\w+)", details)
        return self.by_ref.get(ref.group(1), "(no logged exception)") if ref else ""


@pytest.mark.parametrize("group", GROUPS)
def test_fuzz(fuzz: Fuzz, group: str) -> None:
    f, seen = fuzz, Counter[str]()
    calls = {m.name: rpc_for(f.rd.client.channel, m) for m in methods(group)}
    canary, beside = listing(f.canary), set(os.listdir(f.root))
    host = host_view(f.root)
    assert f.foreign in [Path(p) for p in host[0]], "the test's own mount is missing"
    internals = Internals()
    first: list[str] = []
    logging.getLogger("csi.rpc").addHandler(internals)
    cases = st.sampled_from(methods(group)).flatmap(
        lambda m: st.tuples(st.just(m), request_for(m, f.hints), st.integers(0, 2))
    )

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @seed(SEED)
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
        try:
            check(f, method.name, code, details, canary, beside, host, internals)
        except AssertionError as exc:
            # What an example leaks stays for the next ones: shrinking then reports the
            # simplest of them. The first failing example is the one that made the leak.
            first.append(f"{method.name} setup={setup} {request!r}: {exc}")
            raise AssertionError(f"{exc}\nfirst failing example: {first[0]}") from None

    for case in regressions(group, f.hints):
        one = example(case=case)(one)
    print(f"{group}: seed {SEED} (replay with LOCALVOL_FUZZ_SEED={SEED})")
    try:
        one()
    finally:
        logging.getLogger("csi.rpc").removeHandler(internals)
    print(f"{group}: {sum(seen.values())} examples, {dict(sorted(seen.items()))}")


def check(
    f: Fuzz,
    method: str,
    code: grpc.StatusCode,
    details: str,
    canary: dict[str, Entry],
    beside: set[str],
    host: tuple[tuple[str, ...], tuple[str, ...]],
    internals: Internals,
) -> None:
    """One example's outcome: a status a caller can act on, nothing changed that it made."""
    replay = f"(replay: LOCALVOL_FUZZ_SEED={SEED})"
    wrong = (Code.UNKNOWN, Code.INTERNAL, Code.DEADLINE_EXCEEDED, Code.UNAVAILABLE)
    assert code not in wrong, f"{method}: {code.name} {details} {internals.cause(details)} {replay}"
    assert listing(f.canary) == canary, f"the canary changed {replay}"
    assert set(os.listdir(f.root)) == beside, f"files appeared beside the data root {replay}"
    now = host_view(f.root)
    loops = {d: (b, loop_is_dying(d)) for d, b in backing_names_under(f.root).items()}
    assert now == host, f"mounts or loop devices changed {replay}: {now}, {loops}"


def _call(call: object, request: Message) -> tuple[grpc.StatusCode, str]:
    try:
        call(request, timeout=TIMEOUT)  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return Code.OK, ""
