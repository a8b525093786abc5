"""Volume health: what is wrong with a volume on this node, in words a user can act on."""

from __future__ import annotations

from pathlib import Path

from csi.host import fs, loopdev, mount
from csi.host.errors import LoopDeviceUnreadable
from csi.state.records import VolumeRecord
from csi.volumes.conditions import HEALTHY, Condition, found
from csi.volumes.conditions import Problem as P
from csi.volumes.manager import Volumes

__all__ = ["HEALTHY", "Condition", "HostView", "check"]


class HostView:
    """One reading of the mount table, and of the loop devices once a loop volume asks,
    shared by many checks (a ListVolumes page), or for one volume's check the lines of the
    table naming its paths (the kubelet asks about every mounted volume every minute)."""

    def __init__(self, mounts: list[mount.MountEntry]) -> None:
        self.mounts = mounts
        self._loops: loopdev.LoopTable | None = None

    @classmethod
    def read(cls) -> HostView:
        return cls(mount.read_mounts())

    @classmethod
    def of(cls, record: VolumeRecord) -> HostView:
        return cls(mount.read_mounts_naming(*record.host_paths))

    def writable_device(self, image: Path) -> str | None:
        """The image's writable loop device, found by the image's identity."""
        if self._loops is None:
            self._loops = loopdev.LoopTable.read()
        found = self._loops.devices_of(image)
        return found[0] if found else None


def check(volumes: Volumes, record: VolumeRecord, host: HostView | None = None) -> Condition:
    """The first problem found with ``record`` on this node, or HEALTHY."""
    backend = volumes.backend(record)
    facts = backend.facts
    data = backend.path(record)
    if not data.exists():
        return found(P.DATA_MISSING, noun=facts.data_noun, path=data)
    if not record.in_use and not facts.loop_device:
        return HEALTHY  # nothing on the host to inspect
    host = host or HostView.of(record)
    table = host.mounts
    try:
        device = host.writable_device(data) if facts.loop_device else None
    except LoopDeviceUnreadable as exc:
        return found(P.LOOP_UNIDENTIFIED, detail=exc.message)
    if record.staging_path:
        if facts.loop_device and device is None:
            return found(P.LOOP_DETACHED)
        if facts.staging_mount:
            staged = mount.mounts_at(record.staging_path, table)
            if not staged:
                return found(P.STAGING_MOUNT_GONE, path=record.staging_path)
            if staged[-1].read_only and not record.staged_read_only:
                return found(P.READ_ONLY_REMOUNT)
    for target in record.targets:
        if not mount.mounts_at(target, table):
            return found(P.TARGET_MOUNT_GONE, path=target)
    if device is not None and record.fs_type == "ext4":
        errors = fs.ext4_error_count(device)
        if errors:
            return found(P.FILESYSTEM_ERRORS, fs="ext4", count=errors)
    if device is not None and loopdev.device_size(device) < record.capacity_bytes:
        return found(P.DEVICE_TOO_SMALL)
    return HEALTHY
