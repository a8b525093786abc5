"""Publish targets: the per-pod paths a staged volume is bound onto."""

from __future__ import annotations

from pathlib import Path

from csi.errors import FailedPrecondition
from csi.faults import crash_point
from csi.host import files, mount, mountpoints
from csi.host.copy import give_tree_to_group
from csi.state.records import VolumeRecord
from csi.volumes import encryption


def mounted_anywhere(record: VolumeRecord) -> bool:
    """Is anything mounted at the volume's staging path or any of its targets?"""
    paths = record.host_paths
    table = mount.read_mounts_naming(*paths)
    return any(mount.mounts_at(p, table) for p in paths)


def publish_filesystem(
    record: VolumeRecord,
    staging: Path,
    target: Path,
    *,
    read_only: bool,
    flags: list[str],
    group: int | None,
) -> None:
    """Publish a staged filesystem (an encrypted one's data directory) and, for a writable
    target, hand it to the pod's fsGroup."""
    source = encryption.data_dir(staging) if record.spec.encrypted else None
    publish_mount(staging, target, read_only=read_only, flags=flags, source=source)
    if group is not None and not read_only:
        give_to_group(target, group)


def unpublish_filesystem(target: Path) -> None:
    unpublish(target)
    crash_point("unpublish:unmounted")


def publish_mount(
    staging: Path,
    target: Path,
    *,
    read_only: bool,
    flags: list[str],
    source: Path | None = None,
) -> None:
    """Bind the staged filesystem (or ``source`` inside it) onto ``target``, a directory we
    create if missing."""
    if not mount.is_mount_point(staging):
        raise FailedPrecondition(f"volume is not staged at {staging}")
    _bind_new_target(source or staging, target, read_only=read_only, flags=flags)


def publish_directory(
    directory: Path,
    target: Path,
    *,
    read_only: bool,
    flags: list[str],
    group: int | None,
    scratch: Path,
) -> None:
    """Bind a directory volume's own directory onto ``target`` (no staging mount in
    between) and, for a writable target, hand it to the pod's fsGroup.

    A bind gets ro and per-mount flags (noatime, nosuid...) from a remount, and a remount
    changes only the one mount it names, not the copies a shared mount has already passed
    on (the kubelet's pods directory is shared with the host, and the container runtime
    binds from there). So the flags go onto a bind at the private ``scratch`` point first,
    and the target is bound from it: every copy is born with them."""
    if not directory.is_dir():
        raise FailedPrecondition(f"the volume's data directory {directory} is missing")
    if mount.is_mount_point(target):
        return
    files.make_dir(scratch, parents=True)
    try:
        mount.bind_mount(directory, scratch, read_only=read_only, flags=flags)
        try:
            _bind_new_target(scratch, target, read_only=read_only, flags=flags)
        finally:
            mount.unmount(scratch)
    finally:
        files.remove_dir(scratch)
    if group is not None and not read_only:
        give_to_group(target, group)


def _bind_new_target(source: Path, target: Path, *, read_only: bool, flags: list[str]) -> None:
    """Bind ``source`` onto ``target``, a directory we create if missing (and remove again
    if the bind fails); a target already mounted is left as it is."""
    if mount.is_mount_point(target):
        return
    created = mountpoints.make(target, directory=True)
    try:
        mountpoints.bind_onto(source, target, directory=True, read_only=read_only, flags=flags)
    except BaseException:
        if created:
            mountpoints.remove(target)
        raise


def publish_block(device: str | None, target: Path, *, read_only: bool) -> None:
    """Bind the loop device node onto ``target`` (a file we create if missing)."""
    if device is None:
        raise FailedPrecondition("volume is not staged: no loop device is attached")
    if mount.is_mount_point(target):
        return
    created = mountpoints.make(target, directory=False)
    try:
        mountpoints.bind_onto(device, target, directory=False, read_only=read_only, flags=[])
    except BaseException:
        if created:
            mountpoints.remove(target)
        raise


def give_to_group(root: Path, gid: int) -> None:
    """Let the pod's fsGroup use the volume, as the kubelet would; skipped when the root
    already belongs to the group and is setgid (the kubelet's OnRootMismatch policy)."""
    if mountpoints.group_of(root) == (gid, True):
        return
    give_tree_to_group(root, gid)


def bound_device(target: Path) -> str | None:
    """The loop device node bind-mounted at ``target`` (a block publish), if any."""
    return mountpoints.bound_loop_device(target)


def unpublish(target: Path) -> None:
    """Unmount ``target`` and remove the file or directory we made there."""
    mount.unmount(target)
    mountpoints.remove(target)
