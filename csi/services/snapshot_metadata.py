"""CSI SnapshotMetadata: the allocated blocks of a snapshot, and the blocks changed between
two snapshots of one volume, streamed as variable-length ranges (volumes/snapshot_blocks.py).

Only loop volumes have blocks (block or filesystem access alike: the snapshot is the image);
a directory volume's snapshot is refused. The ranges are computed under the snapshots'
locks before the first message is sent, so a snapshot deleted meanwhile cannot cut a stream
short with a half-read image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack

import grpc

from csi.errors import InvalidArgument
from csi.host.extents import Range
from csi.layout import check_id
from csi.locks import KeyedLocks
from csi.pb import csi_pb2, csi_pb2_grpc
from csi.state.records import SnapshotRecord
from csi.validation import check_map
from csi.volumes import snapshot_blocks
from csi.volumes.snapshots import Snapshots

# Ranges per message when the caller leaves max_results at 0.
DEFAULT_RESULTS = 256


def _pages(ranges: Sequence[Range], max_results: int) -> Iterator[list[csi_pb2.BlockMetadata]]:
    size = max_results or DEFAULT_RESULTS
    for i in range(0, len(ranges), size):
        yield [csi_pb2.BlockMetadata(byte_offset=o, size_bytes=n) for o, n in ranges[i : i + size]]


class SnapshotMetadataService(csi_pb2_grpc.SnapshotMetadataServicer):
    def __init__(self, snapshots: Snapshots, locks: KeyedLocks) -> None:
        self._snapshots = snapshots
        self._locks = locks

    def _snapshot(self, snapshot_id: str, what: str) -> SnapshotRecord:
        if not snapshot_id:
            raise InvalidArgument(f"{what} is required")
        return self._snapshots.store.require_ready(check_id(snapshot_id, what))

    def GetMetadataAllocated(
        self, request: csi_pb2.GetMetadataAllocatedRequest, context: grpc.ServicerContext
    ) -> Iterator[csi_pb2.GetMetadataAllocatedResponse]:
        check_map(request.secrets, "secrets")
        snapshot = self._snapshot(request.snapshot_id, "snapshot_id")
        if request.max_results < 0:
            raise InvalidArgument("max_results must not be negative")
        with self._locks.hold(snapshot.snapshot_id):
            ranges = snapshot_blocks.allocated(self._snapshots, snapshot, request.starting_offset)
        return (
            csi_pb2.GetMetadataAllocatedResponse(
                block_metadata_type=csi_pb2.VARIABLE_LENGTH,
                volume_capacity_bytes=snapshot.size_bytes,
                block_metadata=page,
            )
            for page in _pages(ranges, request.max_results)
        )

    def GetMetadataDelta(
        self, request: csi_pb2.GetMetadataDeltaRequest, context: grpc.ServicerContext
    ) -> Iterator[csi_pb2.GetMetadataDeltaResponse]:
        check_map(request.secrets, "secrets")
        base = self._snapshot(request.base_snapshot_id, "base_snapshot_id")
        target = self._snapshot(request.target_snapshot_id, "target_snapshot_id")
        if request.max_results < 0:
            raise InvalidArgument("max_results must not be negative")
        with ExitStack() as held:
            for snapshot_id in sorted({base.snapshot_id, target.snapshot_id}):
                held.enter_context(self._locks.hold(snapshot_id))
            ranges = snapshot_blocks.delta(self._snapshots, base, target, request.starting_offset)
        return (
            csi_pb2.GetMetadataDeltaResponse(
                block_metadata_type=csi_pb2.VARIABLE_LENGTH,
                volume_capacity_bytes=target.size_bytes,
                block_metadata=page,
            )
            for page in _pages(ranges, request.max_results)
        )
