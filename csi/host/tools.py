"""Every host program the driver runs, and the Debian package that provides it.

The single list the container image (Dockerfile), Probe and hack/lib.sh are checked against:
``run()`` refuses a program that is not declared here. Mounts, unmounts and loop devices
need no program: they are system calls (csi.host.kernel); what is left has no kernel
interface (making, checking, growing and probing filesystems).
"""

from __future__ import annotations

HOST_TOOLS: dict[str, str] = {
    "blkid": "util-linux",
    "mkfs.ext4": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "resize2fs": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "xfs_growfs": "xfsprogs",
}

# Without these the driver cannot serve any volume; Probe fails until they are present.
# (xfs tools are optional: only xfs volumes need them, and they fail with a clear error.)
ESSENTIAL_TOOLS: tuple[str, ...] = (
    "blkid",
    "mkfs.ext4",
    "e2fsck",
    "resize2fs",
)


# Never cut short by an RPC's deadline, only by their own cap: an offline resize2fs killed
# half-way can leave the filesystem damaged, whereas a finished one is merely late.
RUNS_PAST_DEADLINE: frozenset[str] = frozenset({"resize2fs"})


def packages() -> list[str]:
    return sorted(set(HOST_TOOLS.values()))
