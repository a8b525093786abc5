"""Where a sparse file holds data, and where two files differ.

`data_ranges` asks the filesystem for the file's data with SEEK_DATA/SEEK_HOLE (holes are
never read). `mapping` asks for the file's extents with the FIEMAP ioctl: their physical
addresses show which parts two reflinked copies still share, which therefore cannot
differ (the ioctl is csi.host.kernel's step ``extents:map``). `differing` compares what is
left byte for byte, one block at a time.

Ranges are ``(offset, length)`` pairs in bytes, sorted, never overlapping.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from csi.host import kernel
from csi.host.errors import ExtentsUnavailable, IoctlFailed

Range = tuple[int, int]

BLOCK = 4096  # the granularity of comparisons
_CHUNK = 1024 * 1024  # bytes read at a time when comparing

# <linux/fiemap.h>
FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
# Extents whose physical address says nothing dependable about the data.
FIEMAP_EXTENT_UNTRUSTED = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400
_HEADER = struct.Struct("=QQIIII")  # fm_start, fm_length, fm_flags, mapped, count, reserved
_EXTENT = struct.Struct("=QQQQQIIII")  # logical, physical, length, 2 reserved, flags, 3 reserved
_BATCH = 256


@dataclass(frozen=True)
class Extent:
    logical: int
    physical: int
    length: int
    flags: int

    @property
    def trusted(self) -> bool:
        return not self.flags & FIEMAP_EXTENT_UNTRUSTED


def data_ranges(path: Path | str, start: int = 0, end: int | None = None) -> list[Range]:
    """The parts of ``path`` between ``start`` and ``end`` (default: its size) that hold data."""
    ranges: list[Range] = []
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size if end is None else end
        offset = start
        while offset < size:
            try:
                data = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nothing but a hole from here on
                    break
                raise
            if data >= size:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
            ranges.append((data, hole - data))
            offset = hole
    finally:
        os.close(fd)
    return ranges


def mapping(path: Path | str) -> list[Extent]:
    """Every extent of ``path`` (FIEMAP, flushed first so that delayed writes are placed).
    ExtentsUnavailable if the filesystem cannot tell; IoctlFailed if FIEMAP fails otherwise."""
    extents: list[Extent] = []
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        start = 0
        while True:
            buf = bytearray(_HEADER.size + _BATCH * _EXTENT.size)
            _HEADER.pack_into(buf, 0, start, 2**64 - 1 - start, FIEMAP_FLAG_SYNC, 0, _BATCH, 0)
            try:
                kernel.ioctl("extents:map", fd, FS_IOC_FIEMAP, buf, where=str(path))
            except IoctlFailed as failed:
                if failed.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
                    raise ExtentsUnavailable(f"{path}: the filesystem has no FIEMAP") from failed
                raise
            mapped = _HEADER.unpack_from(buf, 0)[3]
            last = False
            for i in range(mapped):
                logical, physical, length, _, _, flags, *_ = _EXTENT.unpack_from(
                    buf, _HEADER.size + i * _EXTENT.size
                )
                extents.append(Extent(logical, physical, length, flags))
                last = bool(flags & FIEMAP_EXTENT_LAST)
            if last or mapped == 0:
                return extents
            start = extents[-1].logical + extents[-1].length
    finally:
        os.close(fd)


def shared_ranges(a: Iterable[Extent], b: Iterable[Extent]) -> list[Range]:
    """Where the two files map the same logical bytes to the same physical bytes."""
    shared: list[Range] = []
    theirs = sorted((e for e in b if e.trusted), key=lambda e: e.logical)
    for mine in sorted((e for e in a if e.trusted), key=lambda e: e.logical):
        for other in theirs:
            if other.logical >= mine.logical + mine.length:
                break
            lo = max(mine.logical, other.logical)
            hi = min(mine.logical + mine.length, other.logical + other.length)
            if lo >= hi:
                continue
            if mine.physical - mine.logical == other.physical - other.logical:
                shared.append((lo, hi - lo))
    return merge(shared)


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, with touching or overlapping ranges joined."""
    out: list[Range] = []
    for offset, length in sorted(r for r in ranges if r[1] > 0):
        if out and offset <= out[-1][0] + out[-1][1]:
            prev_offset, prev_length = out[-1]
            out[-1] = (prev_offset, max(prev_length, offset + length - prev_offset))
        else:
            out.append((offset, length))
    return out


def subtract(ranges: Iterable[Range], minus: Iterable[Range]) -> list[Range]:
    """``ranges`` without the bytes of ``minus``."""
    cuts = merge(minus)
    out: list[Range] = []
    for offset, length in merge(ranges):
        pos, end = offset, offset + length
        for cut_offset, cut_length in cuts:
            cut_end = cut_offset + cut_length
            if cut_end <= pos or cut_offset >= end:
                continue
            if cut_offset > pos:
                out.append((pos, cut_offset - pos))
            pos = max(pos, cut_end)
        if pos < end:
            out.append((pos, end - pos))
    return out


def _blocks(a: int, b: int, ranges: list[Range]) -> Iterator[Range]:
    """Each BLOCK-aligned block of ``ranges`` where files ``a`` and ``b`` differ."""
    for offset, length in ranges:
        pos = offset - offset % BLOCK
        end = offset + length
        while pos < end:
            size = min(_CHUNK, end - pos)
            size += -size % BLOCK
            mine, theirs = os.pread(a, size, pos), os.pread(b, size, pos)
            for i in range(0, size, BLOCK):
                if mine[i : i + BLOCK].ljust(BLOCK, b"\0") != theirs[i : i + BLOCK].ljust(
                    BLOCK, b"\0"
                ):
                    yield (pos + i, BLOCK)
            pos += size


def differing(a: Path | str, b: Path | str, ranges: Iterable[Range]) -> list[Range]:
    """The blocks within ``ranges`` whose bytes differ between ``a`` and ``b`` (bytes past
    a file's end read as zeros), merged into ranges."""
    fa = os.open(a, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fb = os.open(b, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return merge(_blocks(fa, fb, merge(ranges)))
        finally:
            os.close(fb)
    finally:
        os.close(fa)
