"""Loop volumes: a sparse image file, attached to a loop device, formatted or raw."""

from __future__ import annotations

import contextlib
from pathlib import Path

from csi.errors import FailedPrecondition
from csi.host import loopdev, mkfs, mount
from csi.host.fs import create_sparse_file, durable_rename
from csi.layout import Layout
from csi.state.records import AccessType, VolumeRecord


class LoopVolumes:
    def __init__(self, layout: Layout) -> None:
        self._layout = layout

    def path(self, record: VolumeRecord) -> Path:
        return self._layout.image_path(record.volume_id)

    def exists(self, record: VolumeRecord) -> bool:
        return self.path(record).is_file()

    def create(self, record: VolumeRecord) -> None:
        """Build the image under a scratch name and rename it into place when complete.

        The final name only ever holds a finished image, so a retry after a crash either
        finds it done or starts the scratch file again.
        """
        final = self.path(record)
        if final.is_file():
            return
        partial = self._layout.partial(final)
        try:
            create_sparse_file(partial, record.capacity_bytes)
            if record.access_type is AccessType.MOUNT:
                mkfs.make_filesystem(partial, record.fs_type)
            durable_rename(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def delete(self, record: VolumeRecord) -> None:
        final = self.path(record)
        for device in loopdev.devices_for(final):
            if self._device_mounts(device):
                raise FailedPrecondition(f"volume is still mounted through {device}")
            loopdev.detach(device)
        final.unlink(missing_ok=True)
        self._layout.partial(final).unlink(missing_ok=True)

    def device(self, record: VolumeRecord) -> str | None:
        devices = loopdev.devices_for(self.path(record))
        return devices[0] if devices else None

    def stage(
        self, record: VolumeRecord, staging: Path, *, read_only: bool, flags: list[str]
    ) -> None:
        """Attach the image (reusing an attached device) and mount it for filesystem use."""
        image = self.path(record)
        if not image.is_file():
            raise FailedPrecondition("the volume's image file is missing on this node")
        attached_here = self.device(record) is None
        device = loopdev.attach(image)
        if record.access_type is AccessType.BLOCK:
            return
        if self._mounted_at(device, staging):
            return
        try:
            found = mkfs.detect(device)
            if found is None:
                # Created blank (e.g. the create was interrupted before mkfs): format now.
                mkfs.make_filesystem(device, record.fs_type)
            elif found != record.fs_type:
                raise FailedPrecondition(
                    f"device holds {found}, volume was created for {record.fs_type}"
                )
            options = ["ro", *flags] if read_only else list(flags)
            mount.mount(device, staging, fs_type=record.fs_type, options=options)
        except BaseException:
            if attached_here:
                with contextlib.suppress(Exception):
                    loopdev.detach(device)
            raise

    def unstage(self, record: VolumeRecord, staging: Path) -> None:
        mount.unmount(staging)
        for device in loopdev.devices_for(self.path(record)):
            if not self._device_mounts(device):
                loopdev.detach(device)

    def capacity_on_disk(self, record: VolumeRecord) -> int:
        try:
            return self.path(record).stat().st_size
        except FileNotFoundError:
            return record.capacity_bytes

    @staticmethod
    def _device_mounts(device: str) -> list[mount.MountEntry]:
        """Mounts whose source is ``device`` or that bind the device node itself."""
        name = device.removeprefix("/dev/")
        return [
            m
            for m in mount.read_mounts()
            if m.source == device or (m.fs_type == "devtmpfs" and m.root == f"/{name}")
        ]

    @staticmethod
    def _mounted_at(device: str, staging: Path) -> bool:
        return any(m.source == device for m in mount.mounts_at(staging))
