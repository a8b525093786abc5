"""The permission bits of everything the driver keeps on a node: one place for every mode.

Nothing the driver keeps is reachable by unprivileged host users. The kubelet, the CSI
sidecars and Docker connect and mount as root, so the driver's own directories, files and
sockets are root's alone; a volume's root gives a pod what it needs through the pod's
fsGroup (VOLUME_MOUNT_GROUP), never through "other" bits: a staged or published volume is
reachable at the kubelet's paths, whose parents other users may traverse.
"""

from __future__ import annotations

import stat

PRIVATE_DIR = 0o700  # the data root, volumes/, images/, state/..., every directory on the way
PRIVATE_FILE = 0o600  # images, snapshot images, records, the encryption salt
SOCKET = 0o600  # the CSI, registration and Docker plugin sockets
SOCKET_UMASK = 0o177  # in force while a socket is bound: it is never wider than SOCKET
# A new volume's root (directory volumes, loop filesystems, encrypted data/ directories):
# owner and group only, setgid so files made there keep the group (the pod's fsGroup, given
# at publish). A StorageClass `mode` is the user's choice and replaces it as given.
VOLUME_ROOT = 0o2770
ENCRYPTED_FS_ROOT = 0o700  # holds the salt and data/; pods see only data/
MOUNT_POINT_DIR = 0o750  # a publish target we make (covered by the mount once bound)
MOUNT_POINT_FILE = 0o640  # a block publish target; the bound device node shows its own mode
LOOP_DEVICE = 0o660  # a loop device node we make where udev did not (udev: root:disk 0660)
# What the pod's fsGroup gets on every directory and file of a writable publish.
GROUP_DIR_BITS = stat.S_ISGID | stat.S_IRWXG
GROUP_FILE_BITS = stat.S_IRGRP | stat.S_IWGRP
OTHER_BITS = stat.S_IRWXO
NO_OTHER = 0o7777 & ~OTHER_BITS  # what ``restricted`` keeps of a copied volume's root
GROUP_OTHER_BITS = stat.S_IRWXG | stat.S_IRWXO


def without_other(mode: int) -> int:
    """``mode`` with no access for "other"."""
    return mode & ~OTHER_BITS


def group_shared(mode: int, *, directory: bool) -> int:
    """``mode`` plus what the pod's fsGroup needs (rwx and setgid on a directory, rw on a
    file)."""
    return mode | (GROUP_DIR_BITS if directory else GROUP_FILE_BITS)


def restricted(mode: int, allowed: int) -> int:
    """``mode`` (permission bits) with every bit outside ``allowed`` cleared."""
    return stat.S_IMODE(mode) & allowed
