"""Filesystem sizes read from superblocks, and online growth with the filesystem's tool."""

from __future__ import annotations

import struct
from pathlib import Path

from csi.host.errors import CommandFailed, GrowNeedsPrivilege
from csi.host.run import run

EXT4_SUPERBLOCK = 1024
EXT4_MAGIC = 0xEF53
EXT4_FEATURE_INCOMPAT_64BIT = 0x80


def filesystem_size(device: str | Path, fs_type: str) -> int | None:
    """Bytes the filesystem on ``device`` spans, read from its superblock (None if unknown)."""
    with open(device, "rb") as fh:
        if fs_type == "ext4":
            fh.seek(EXT4_SUPERBLOCK)
            sb = fh.read(1024)
            if len(sb) < 1024 or struct.unpack_from("<H", sb, 0x38)[0] != EXT4_MAGIC:
                return None
            blocks = struct.unpack_from("<I", sb, 0x04)[0]
            if struct.unpack_from("<I", sb, 0x60)[0] & EXT4_FEATURE_INCOMPAT_64BIT:
                blocks |= struct.unpack_from("<I", sb, 0x150)[0] << 32
            block_size = 1024 << struct.unpack_from("<I", sb, 0x18)[0]
            return int(blocks * block_size)
        if fs_type == "xfs":
            sb = fh.read(16)
            if len(sb) < 16 or sb[:4] != b"XFSB":
                return None
            block_size, data_blocks = struct.unpack_from(">IQ", sb, 4)
            return int(block_size * data_blocks)
    return None


def device_bytes(device: str | Path) -> int:
    with open(device, "rb") as fh:
        return fh.seek(0, 2)


def grow_unmounted_ext4(device: str) -> bool:
    """Grow an unmounted ext4 to fill its device (checked first, as resize2fs asks).

    Returns True if it grew. A no-op, without forking, when it already fills the device.
    """
    size = filesystem_size(device, "ext4")
    if size is None or size >= device_bytes(device):
        return False
    run(["e2fsck", "-f", "-p", device], ok_codes=(0, 1))
    run(["resize2fs", device])
    return True


def grow_filesystem(device: str, mount_point: str, fs_type: str) -> None:
    """Grow a mounted filesystem to fill its device."""
    if fs_type == "ext4":
        try:
            run(["resize2fs", device])
        except CommandFailed as exc:
            if "Permission denied" in exc.stderr:
                raise GrowNeedsPrivilege(
                    "growing a mounted ext4 needs CAP_SYS_RESOURCE, which this driver lacks; "
                    "the filesystem grows the next time the volume is staged"
                ) from None
            raise
    elif fs_type == "xfs":
        run(["xfs_growfs", "-d", mount_point])
