"""Filesystem detection and creation. Nothing here formats a device that holds data."""

from __future__ import annotations

from pathlib import Path

from csi.host.errors import FormatRefused, UnsupportedFilesystem
from csi.host.run import run

SUPPORTED_FS = ("ext4", "xfs")
# The smallest filesystem each mkfs accepts (xfsprogs refuses anything under 300 MiB).
MIN_FS_SIZE = {"ext4": 16 * 1024 * 1024, "xfs": 300 * 1024 * 1024}


def detect(device_or_file: Path | str) -> str | None:
    """The filesystem (or other signature) type found on the target, or None if blank."""
    proc = run(
        ["blkid", "--probe", "--output", "value", "--match-tag", "TYPE", str(device_or_file)],
        ok_codes=(0, 2),
    )
    found = proc.stdout.strip()
    return found or None


def make_filesystem(
    target: Path | str, fs_type: str, *, known_blank: bool = False, encrypt: bool = False
) -> None:
    """Format ``target`` with ``fs_type``; refuses if any signature is already present.

    ``known_blank`` skips the probe for a file the caller has just created full of zeros.
    """
    existing = None if known_blank else detect(target)
    if existing is not None:
        raise FormatRefused(f"refusing to format: {target} already holds {existing}")
    if fs_type == "ext4":
        argv = ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard"]
        argv += ["-O", "encrypt", str(target)] if encrypt else [str(target)]
    elif fs_type == "xfs":
        argv = ["mkfs.xfs", "-q", "-K", str(target)]
    else:  # validated at the edge; kept as a guard
        raise UnsupportedFilesystem(f"unsupported filesystem {fs_type}")
    run(argv)
