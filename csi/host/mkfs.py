"""Filesystem detection and creation. Nothing here formats a device that holds data."""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from csi.host.errors import CommandFailed, FormatRefused, UnsupportedFilesystem
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
    target: Path | str,
    fs_type: str,
    *,
    known_blank: bool = False,
    encrypt: bool = False,
    root_mode: int | None = None,
) -> None:
    """Format ``target`` with ``fs_type``; refuses if any signature is already present.

    ``known_blank`` skips the probe for a file the caller has just created full of zeros.
    ``root_mode`` is the new root directory's mode (mkfs's own is 0755), written while the
    filesystem is still a file: no loop device, mount or unmount (see sets_root_mode).
    """
    existing = None if known_blank else detect(target)
    if existing is not None:
        raise FormatRefused(f"refusing to format: {target} already holds {existing}")
    if root_mode is not None and not sets_root_mode(fs_type, root_mode):
        raise ValueError(f"mkfs cannot give an {fs_type} root the mode {root_mode:04o}")
    if fs_type == "ext4":
        argv = ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard"]
        run(argv + (["-O", "encrypt", str(target)] if encrypt else [str(target)]))
        if root_mode is not None:
            _set_ext4_root_mode(target, root_mode)
    elif fs_type == "xfs":
        argv = ["mkfs.xfs", "-q", "-K"]
        if root_mode is None:
            run([*argv, str(target)])
            return
        with _xfs_prototype(root_mode) as fd:
            run([*argv, "-p", f"/proc/self/fd/{fd}", str(target)], pass_fds=(fd,))
    else:  # validated at the edge; kept as a guard
        raise UnsupportedFilesystem(f"unsupported filesystem {fs_type}")


def sets_root_mode(fs_type: str, mode: int) -> bool:
    """Whether make_filesystem can give the root ``mode`` itself. ext4: any (debugfs
    writes the root inode's mode in the unmounted image). xfs: mkfs.xfs's prototype file
    names set-user-ID, set-group-ID and the permission bits, not the sticky bit."""
    if fs_type == "ext4":
        return True
    return fs_type == "xfs" and not mode & stat.S_ISVTX


# debugfs writes its banner ("debugfs 1.47.0 (5-Feb-2023)") to stderr and exits 0 even
# when a request fails: anything else it writes is the failure.
_DEBUGFS_BANNER = re.compile(r"^debugfs \d+\.\d+")


def _set_ext4_root_mode(image: Path | str, mode: int) -> None:
    request = f"set_inode_field / mode 0{stat.S_IFDIR | mode:o}"
    proc = run(["debugfs", "-w", "-R", request, str(image)])
    complaints = [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and not _DEBUGFS_BANNER.match(line)
    ]
    if complaints:
        raise CommandFailed(
            f"debugfs could not set the root's mode: {complaints[-1][:300]}",
            tool="debugfs",
            returncode=proc.returncode,
            stderr=proc.stderr,
        )


@contextlib.contextmanager
def _xfs_prototype(mode: int) -> Iterator[int]:
    """A prototype file for mkfs.xfs -p that makes only the root, owned by root, with
    ``mode``: in memory (a memfd), so a crash leaves nothing to clean up."""
    kind = "d" + ("u" if mode & stat.S_ISUID else "-") + ("g" if mode & stat.S_ISGID else "-")
    text = f"/dev/null\n0 0\n{kind}{mode & 0o777:03o} 0 0\n$\n"
    fd = os.memfd_create("xfs-prototype")
    try:
        os.write(fd, text.encode())
        yield fd
    finally:
        os.close(fd)
