"""Loop volumes: a sparse image file, attached to a loop device, formatted or raw."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from csi.errors import FailedPrecondition
from csi.faults import crash_point
from csi.host import loopdev, mkfs, mount, resize
from csi.host.copy import clone_or_copy
from csi.host.fs import create_sparse_file, durable_rename
from csi.layout import Layout, check_id
from csi.state.records import AccessType, VolumeRecord
from csi.volumes import encryption


class LoopVolumes:
    def __init__(self, layout: Layout) -> None:
        self._layout = layout
        # Two `losetup --find` at once pick the same free device and the loser backs off for
        # 200 ms; attaching takes about a millisecond, so this driver attaches one at a time.
        self._attaching = threading.Lock()

    def _attach(self, image: Path, *, read_only: bool = False) -> tuple[str, bool]:
        """The image's loop device and whether this call attached it: a writable device is
        shared (one per image, reused when attached), a read-only one is always new."""
        with self._attaching:
            if not read_only:
                existing = loopdev.devices_for(image)
                if existing:
                    return existing[0], False
            return loopdev.attach(image, read_only=read_only), True

    def path(self, record: VolumeRecord) -> Path:
        return self._layout.image_path(record.volume_id)

    def create(
        self, record: VolumeRecord, source: Path | None = None, secret: bytes | None = None
    ) -> None:
        """Build the image under a scratch name and rename it into place when complete.

        With ``source`` (a snapshot or another volume's image) the image starts as a copy
        of it, grown to the record's size; the filesystem is grown when the volume is staged.
        The final name only ever holds a finished image, so a retry after a crash either
        finds it done or starts the scratch file again.
        """
        final = self.path(record)
        if final.is_file():
            return
        partial = self._layout.partial(final)
        partial.unlink(missing_ok=True)
        try:
            if source is None:
                create_sparse_file(partial, record.capacity_bytes)
                crash_point("create:image")
                if record.access_type is AccessType.MOUNT:
                    # Just created, sparse and zero-filled: nothing to probe before mkfs.
                    mkfs.make_filesystem(
                        partial,
                        record.fs_type,
                        known_blank=True,
                        encrypt=record.spec.encrypted,
                    )
                    self._set_up_root(record, partial, secret)
                crash_point("create:formatted")
            else:
                clone_or_copy(source, partial)
                if partial.stat().st_size < record.capacity_bytes:
                    os.truncate(partial, record.capacity_bytes)
            durable_rename(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def _set_up_root(self, record: VolumeRecord, image: Path, secret: bytes | None) -> None:
        """Give a new filesystem its root mode and, if encrypted, its salt and encrypted
        ``data/`` directory, through a private mount under the data root; so the key the
        volume was created with is its key, and staging never has to write."""
        mode = record.spec.mode
        encrypted = record.spec.encrypted
        if mode is None and not encrypted:
            return
        mount_point = self._layout.setup_dir / check_id(record.volume_id)
        mount_point.mkdir(parents=True, exist_ok=True)
        device, _ = self._attach(image)
        try:
            mount.mount(device, mount_point, fs_type=record.fs_type)
            try:
                if encrypted:
                    if secret is None:
                        raise FailedPrecondition("an encrypted volume needs its secret to be made")
                    encryption.set_up(mount_point, secret, mode)
                elif mode is not None:
                    os.chmod(mount_point, mode)
            finally:
                mount.unmount(mount_point)
        finally:
            loopdev.detach(device)
            mount_point.rmdir()

    def delete(self, record: VolumeRecord) -> None:
        final = self.path(record)
        for device in loopdev.devices_for(final, read_only=None):
            if mount.mounts_of_device(device):
                raise FailedPrecondition(f"volume is still mounted through {device}")
            loopdev.detach(device)
        final.unlink(missing_ok=True)
        self._layout.partial(final).unlink(missing_ok=True)

    def device(self, record: VolumeRecord) -> str | None:
        devices = loopdev.devices_for(self.path(record))
        return devices[0] if devices else None

    def stage(
        self,
        record: VolumeRecord,
        staging: Path,
        *,
        read_only: bool,
        flags: list[str],
        secret: bytes | None = None,
    ) -> None:
        """Attach the image (reusing an attached device) and mount it for filesystem use;
        an encrypted volume is unlocked with ``secret``.

        Growth the record asks for and the host lacks is finished first, image first: the
        image is grown to the recorded size, the device told, and an ext4 grown before it
        is mounted (offline growth needs no CAP_SYS_RESOURCE), so a restage after a
        NodeExpandVolume that could not grow the mounted filesystem completes it.
        """
        image = self.path(record)
        if not image.is_file():
            raise FailedPrecondition("the volume's image file is missing on this node")
        size = _grow_image(image, record.capacity_bytes)
        device, attached_here = self._attach(image)
        crash_point("stage:attached")
        if not attached_here and loopdev.device_size(device) < size:
            loopdev.refresh_size(device)
        if record.access_type is AccessType.BLOCK:
            return
        if self._mounted_at(device, staging):
            if secret is not None:
                encryption.unlock(staging, secret)
            return
        mounted_here = False
        try:
            # The superblock read answers the common case without forking blkid.
            has_own_fs = resize.filesystem_size(device, record.fs_type) is not None
            found = record.fs_type if has_own_fs else mkfs.detect(device)
            if found is None:
                # A finished image always holds its filesystem (create formats before the
                # rename), so this one is damaged: never format over it.
                raise FailedPrecondition(
                    f"no {record.fs_type} filesystem found on the volume's image; it may be "
                    "damaged (try fsck on a copy); the driver will not format over it"
                )
            if found != record.fs_type:
                raise FailedPrecondition(
                    f"device holds {found}, volume was created for {record.fs_type}"
                )
            if record.fs_type == "ext4" and not read_only:
                # Grow before mounting: offline growth needs no extra privilege, online
                # growth needs CAP_SYS_RESOURCE.
                resize.grow_unmounted_ext4(device)
            options = ["ro", *flags] if read_only else list(flags)
            if record.fs_type == "xfs":
                # Restores and clones carry their source's UUID; xfs refuses a second mount
                # of one UUID unless told the copies are independent.
                options.append("nouuid")
            mount.mount(device, staging, fs_type=record.fs_type, options=options, sensitive=flags)
            mounted_here = True
            crash_point("stage:mounted")
            if not read_only:
                self._fill_device(record, device, staging)
            if secret is not None:
                encryption.unlock(staging, secret)
        except BaseException:
            if mounted_here:
                with contextlib.suppress(Exception):
                    mount.unmount(staging)
            if attached_here:
                with contextlib.suppress(Exception):
                    loopdev.detach(device)
            raise

    def unstage(self, record: VolumeRecord, staging: Path) -> None:
        if record.spec.encrypted and mount.is_mount_point(staging):
            encryption.lock(staging)
        mount.unmount(staging)
        crash_point("unstage:unmounted")
        for device in loopdev.devices_for(self.path(record), read_only=None):
            if not mount.mounts_of_device(device):
                loopdev.detach(device)

    def expand(self, record: VolumeRecord, size: int) -> None:
        """Grow the image file (sparse) and tell an attached loop device its new size."""
        image = self.path(record)
        size = _grow_image(image, size)
        for device in loopdev.devices_for(image, read_only=None):
            if loopdev.device_size(device) < size:
                loopdev.refresh_size(device)

    def grow_filesystem(self, record: VolumeRecord, mount_point: Path) -> int:
        """Grow the mounted filesystem to fill its device; returns the filesystem size."""
        device = self.device(record)
        if device is None:
            raise FailedPrecondition("volume is not staged: no loop device is attached")
        return self._fill_device(record, device, mount_point)

    @staticmethod
    def _fill_device(record: VolumeRecord, device: str, mount_point: Path) -> int:
        device_bytes = loopdev.device_size(device)
        current = resize.filesystem_size(device, record.fs_type) or 0
        if current < device_bytes:
            resize.grow_filesystem(device, str(mount_point), record.fs_type)
            # The on-disk superblock may lag the mounted filesystem's new size.
            current = device_bytes
        return current

    def capacity_on_disk(self, record: VolumeRecord) -> int:
        try:
            return self.path(record).stat().st_size
        except FileNotFoundError:
            return record.capacity_bytes

    def attach_read_only(self, record: VolumeRecord) -> str:
        """A read-only loop device of its own, for a read-only block publish: a read-only
        bind mount cannot stop writes through a device node, a read-only device can."""
        device, _ = self._attach(self.path(record), read_only=True)
        return device

    def release_read_only(self, record: VolumeRecord, device: str) -> None:
        """Detach a read-only device once nothing binds it any more."""
        mine = device in loopdev.devices_for(self.path(record), read_only=True)
        if mine and not mount.mounts_of_device(device):
            loopdev.detach(device)

    @staticmethod
    def _mounted_at(device: str, staging: Path) -> bool:
        return any(m.source == device for m in mount.mounts_at(staging))


def _grow_image(image: Path, size: int) -> int:
    """Grow the image file (sparse, durably) to at least ``size``; returns its size.

    Never shrinks, and a no-op once done: a retry after a crash finds the work done.
    """
    current = image.stat().st_size
    if current >= size:
        return current
    os.truncate(image, size)
    fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return size
