"""How a requested capacity range becomes a volume size, and how much space is left."""

from __future__ import annotations

from typing import TYPE_CHECKING

from csi.config import Config
from csi.errors import InvalidArgument, OutOfRange
from csi.host import files, fs, quota
from csi.layout import Layout
from csi.state.records import Phase, VolumeRecord, VolumeSpec
from csi.units import show_size
from csi.volumes.backend import Promise, facts_for

if TYPE_CHECKING:
    from csi.volumes.ledger import SpaceLedger


def minimum_size(spec: VolumeSpec) -> int:
    return facts_for(spec).minimum_size(spec.fs_type)


def check_range(required: int, limit: int) -> None:
    if required < 0 or limit < 0:
        raise InvalidArgument("capacity_range values must not be negative")
    if limit and required > limit:
        raise InvalidArgument("capacity_range required_bytes exceeds limit_bytes")


def choose_size(required: int, limit: int, spec: VolumeSpec, config: Config) -> int:
    """The size to provision for ``[required, limit]`` (0 means unset), or OUT_OF_RANGE."""
    check_range(required, limit)
    size = required or config.default_volume_size
    if limit and size > limit:
        size = limit
    alignment = facts_for(spec).size_alignment
    if alignment > 1:
        floor = max(required, minimum_size(spec))
        size = -(-max(size, floor) // alignment) * alignment
        if limit and size > limit:
            # An unaligned limit: take the largest whole MiB that still satisfies the range.
            size = limit // alignment * alignment
            if size < floor:
                raise OutOfRange(
                    f"smallest {spec.kind.value} volume is {floor} bytes (whole MiB), "
                    f"above limit_bytes {limit}"
                )
    if size > config.max_volume_size:
        raise OutOfRange(max_size_message(size, config))
    return size


def max_size_message(size: int, config: Config) -> str:
    """The refusal of a volume (or growth) beyond --max-volume-size, naming both sizes."""
    return (
        f"requested size {show_size(size)} is above this driver's maximum volume size "
        f"{show_size(config.max_volume_size)} (--max-volume-size); ask for at most that, or "
        "have the driver's --max-volume-size raised"
    )


def expansion_size(record: VolumeRecord, required: int, limit: int, config: Config) -> int:
    """The size ``record`` should grow to for ``[required, limit]``; never below its size.
    OUT_OF_RANGE beyond the maximum volume size (whether the growth fits is the
    reservation's question: csi.volumes.provisioning)."""
    size = choose_size(required or limit, limit, record.spec, config)
    return max(size, record.capacity_bytes)


def fits(record: VolumeRecord, required: int, limit: int) -> bool:
    """Does an existing volume satisfy a repeated request's capacity range?"""
    if required and record.capacity_bytes < required:
        return False
    return not (limit and record.capacity_bytes > limit)


def counted(record: VolumeRecord) -> bool:
    """Does ``record`` count against the node's space? (A volume being deleted does not.)"""
    return record.phase is not Phase.DELETING


def promises(record: VolumeRecord) -> bool:
    """Does ``record``'s size promise the disk anything (read without touching the host)?
    A sparse image does; a directory only when a project quota holds it to its size."""
    return facts_for(record).promise is Promise.IMAGE or record.project_id is not None


def promised_by(record: VolumeRecord, layout: Layout) -> int:
    """What ``record`` may still take from the disk: its size less what it takes now (a
    loop image's allocated blocks, a held directory's project charge); 0 if it promises
    nothing."""
    if not promises(record):
        return 0
    if facts_for(record).promise is Promise.IMAGE:
        taken = files.allocated_bytes(layout.image_path(record.volume_id))
    else:
        assert record.project_id is not None
        taken = quota.charge(layout.root, record.project_id).bytes_used
    return max(0, record.capacity_bytes - taken)


def available_capacity(config: Config, ledger: SpaceLedger) -> int:
    """Free bytes for new volumes: the data root's free space less what existing volumes
    may still fill (unless --overcommit), capped by --capacity-limit."""
    free = fs.available_bytes(config.data_dir)
    if not config.overcommit:
        # A sparse image that cannot grow into its size fails writes inside the pod's
        # filesystem (ext4 aborts its journal), a held directory's writes fail before its
        # limit: promise only what the disk can keep.
        free = max(0, free - ledger.promised())
    if config.capacity_limit:
        free = min(free, max(0, config.capacity_limit - ledger.provisioned()))
    return free
