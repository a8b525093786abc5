"""SnapshotMetadata on real loop volumes: write known blocks, snapshot, write others, snapshot
again; the allocated ranges and the delta are exactly what was written, from offset 0 and
from the middle, and the spec's errors come back for bad requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from csi.host import extents
from csi.pb import csi_pb2, csi_pb2_grpc
from tests.integration.snapshot_support import Session
from tests.support.driver import RunningDriver, running_driver
from tests.support.host import sh, write_at
from tests.support.kubelet import BLOCK, DIRECTORY, MIB
from tests.support.prerequisites import need_tool
from tests.support.status import rpc_error

BLOCKSIZE = 4096
FIRST = [(0, 2), (100, 1), (1000, 3)]  # (block number, count) written before snapshot 1
SECOND = [(100, 1), (2000, 2), (5000, 1)]  # then, before snapshot 2


def ranges(blocks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(b * BLOCKSIZE, n * BLOCKSIZE) for b, n in sorted(blocks)]


def collect(stream: object) -> tuple[list[tuple[int, int]], set[int]]:
    found, capacities = [], set()
    for message in stream:  # type: ignore[attr-defined]
        assert message.block_metadata_type == csi_pb2.VARIABLE_LENGTH
        capacities.add(message.volume_capacity_bytes)
        found += [(b.byte_offset, b.size_bytes) for b in message.block_metadata]
    return found, capacities


def write(device: Path, blocks: list[tuple[int, int]], fill: int) -> None:
    for block, count in blocks:
        write_at(device, block * BLOCKSIZE, bytes([fill]) * (count * BLOCKSIZE))


@pytest.fixture(params=["tmp", "xfs-reflink"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningDriver]:
    """The driver on the test's own directory (snapshots are sparse copies unless that
    filesystem clones), and on an xfs with reflink (snapshots share extents)."""
    if request.param == "tmp":
        with running_driver(tmp_path / "data") as running:
            yield running
        return
    need_tool("mkfs.xfs")
    image, root = tmp_path / "xfs.img", tmp_path / "xfs"
    root.mkdir()
    with image.open("wb") as fh:
        fh.truncate(400 * MIB)
    assert sh("mkfs.xfs", "-q", "-m", "reflink=1", str(image)).returncode == 0
    assert sh("mount", "-o", "loop", str(image), str(root)).returncode == 0
    try:
        with running_driver(root / "data") as running:
            yield running
    finally:
        sh("umount", str(root))


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every range the driver reads to compare two snapshots."""
    seen: list[tuple[int, int]] = []
    real = extents.differing

    def spy(a: Path | str, b: Path | str, ranges: object) -> list[tuple[int, int]]:
        wanted = list(ranges)  # type: ignore[call-overload]
        seen.extend(wanted)
        return real(a, b, wanted)

    monkeypatch.setattr(extents, "differing", spy)
    return seen


@pytest.fixture
def metadata(session: Session) -> csi_pb2_grpc.SnapshotMetadataStub:
    return csi_pb2_grpc.SnapshotMetadataStub(session.kubelet.client.channel)


def test_allocated_and_delta_match_what_was_written(
    session: Session,
    metadata: csi_pb2_grpc.SnapshotMetadataStub,
    compared: list[tuple[int, int]],
) -> None:
    volume = session.create("meta", BLOCK)
    target = session.mount(volume, BLOCK)
    write(target, FIRST, 0xA1)
    first = session.snapshot("meta-1", volume).snapshot_id
    write(target, SECOND, 0xB2)
    second = session.snapshot("meta-2", volume).snapshot_id

    got, capacity = collect(
        metadata.GetMetadataAllocated(csi_pb2.GetMetadataAllocatedRequest(snapshot_id=first))
    )
    assert got == ranges(FIRST)
    assert capacity == {BLOCK.size}
    got, _ = collect(
        metadata.GetMetadataAllocated(
            csi_pb2.GetMetadataAllocatedRequest(snapshot_id=second, max_results=1)
        )
    )
    assert got == ranges([(0, 2), (100, 1), (1000, 3), (2000, 2), (5000, 1)])

    delta = csi_pb2.GetMetadataDeltaRequest(base_snapshot_id=first, target_snapshot_id=second)
    got, capacity = collect(metadata.GetMetadataDelta(delta))
    assert got == ranges(SECOND)
    assert capacity == {BLOCK.size}
    first_file, second_file = session.snapshot_file(first), session.snapshot_file(second)
    assert first_file is not None
    assert second_file is not None
    shared = extents.shared_ranges(extents.mapping(first_file), extents.mapping(second_file))
    on_xfs = sh("findmnt", "-no", "FSTYPE", "-T", str(first_file)).stdout.strip() == "xfs"
    assert shared or not on_xfs, "reflinked snapshots on xfs share no extents"
    if shared:
        # Reflinked copies: the blocks written only before snapshot 1 are shared by both
        # and never read.
        read = extents.merge(compared)
        for block, count in FIRST:
            if (block, count) not in SECOND:
                unchanged = (block * BLOCKSIZE, count * BLOCKSIZE)
                assert extents.subtract(read, [unchanged]) == read, (unchanged, read)

    # From the middle: a range across the offset starts there, earlier ones are left out.
    middle = 1001 * BLOCKSIZE
    got, _ = collect(
        metadata.GetMetadataAllocated(
            csi_pb2.GetMetadataAllocatedRequest(snapshot_id=first, starting_offset=middle)
        )
    )
    assert got == [(middle, 2 * BLOCKSIZE)]
    delta.starting_offset = 2001 * BLOCKSIZE
    got, _ = collect(metadata.GetMetadataDelta(delta))
    assert got == [(2001 * BLOCKSIZE, BLOCKSIZE), (5000 * BLOCKSIZE, BLOCKSIZE)]
    delta.starting_offset = BLOCK.size
    assert collect(metadata.GetMetadataDelta(delta))[0] == []


def test_errors(session: Session, metadata: csi_pb2_grpc.SnapshotMetadataStub) -> None:
    volume = session.create("meta-err", BLOCK)
    snap = session.snapshot("meta-err-1", volume).snapshot_id
    directory = session.create("meta-dir", DIRECTORY)
    dir_snap = session.snapshot("meta-dir-1", directory).snapshot_id

    def code(request: object) -> grpc.StatusCode:
        if isinstance(request, csi_pb2.GetMetadataAllocatedRequest):
            return rpc_error(lambda: list(metadata.GetMetadataAllocated(request))).code()
        assert isinstance(request, csi_pb2.GetMetadataDeltaRequest)
        return rpc_error(lambda: list(metadata.GetMetadataDelta(request))).code()

    allocated = csi_pb2.GetMetadataAllocatedRequest
    assert code(allocated()) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(allocated(snapshot_id="snap-nope")) == grpc.StatusCode.NOT_FOUND
    assert code(allocated(snapshot_id=snap, starting_offset=-1)) == grpc.StatusCode.OUT_OF_RANGE
    too_far = allocated(snapshot_id=snap, starting_offset=BLOCK.size + 1)
    assert code(too_far) == grpc.StatusCode.OUT_OF_RANGE
    assert code(allocated(snapshot_id=dir_snap)) == grpc.StatusCode.INVALID_ARGUMENT
    delta = csi_pb2.GetMetadataDeltaRequest
    assert code(delta(base_snapshot_id=snap)) == grpc.StatusCode.INVALID_ARGUMENT
    missing = delta(base_snapshot_id="snap-nope", target_snapshot_id=snap)
    assert code(missing) == grpc.StatusCode.NOT_FOUND
    other = session.create("meta-other", BLOCK)
    other_snap = session.snapshot("meta-other-1", other).snapshot_id
    mixed = delta(base_snapshot_id=snap, target_snapshot_id=other_snap)
    assert code(mixed) == grpc.StatusCode.INVALID_ARGUMENT
