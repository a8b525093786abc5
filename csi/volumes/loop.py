"""Loop filesystem volumes: a sparse image on a loop device, formatted (ext4 or xfs) and
mounted; the image and its devices are handled by csi.volumes.loop_image."""

from __future__ import annotations

import contextlib
from pathlib import Path

from csi.errors import FailedPrecondition
from csi.faults import crash_point
from csi.host import files, fs, loopdev, mkfs, modes, mount, resize
from csi.state.records import VolumeRecord
from csi.volumes import encryption, targets
from csi.volumes.backend import LOOP_FILESYSTEM, KindFacts
from csi.volumes.loop_image import ImageBackend


class LoopFilesystemBackend(ImageBackend):
    facts: KindFacts = LOOP_FILESYSTEM

    def create(
        self, record: VolumeRecord, source: Path | None = None, secret: bytes | None = None
    ) -> None:
        """A new image is formatted (and its root set up) before it takes its final name."""

        def format_image(partial: Path) -> None:
            # Just created, sparse and zero-filled: nothing to probe before mkfs.
            mkfs.make_filesystem(
                partial, record.fs_type, known_blank=True, encrypt=record.spec.encrypted
            )
            self._set_up_root(record, partial, secret)

        def close_copy(partial: Path) -> None:
            if record.spec.mode is None:  # a class's mode is for new volumes only
                self._set_up_root(record, partial, secret, copied=True)

        self._images.create(record, source, format_image, close_copy)

    def _set_up_root(
        self, record: VolumeRecord, image: Path, secret: bytes | None, *, copied: bool = False
    ) -> None:
        """Give a new filesystem its root mode (the class's, or modes.VOLUME_ROOT rather
        than mkfs's 0755) and, if encrypted, its salt and encrypted ``data/`` directory,
        through a private mount under the data root; so the key the volume was created with
        is its key, and staging never has to write. A ``copied`` filesystem (a restore or a
        clone) keeps its source's modes, less "other" on what pods see (a source made by an
        older driver had them)."""
        mode = record.spec.mode
        encrypted = record.spec.encrypted
        mount_point = self._layout.setup_path(record.volume_id)
        files.make_dir(mount_point, parents=True)
        with self._images.scratch(image) as device:
            # A copy carries its source's UUID, which xfs refuses to mount twice.
            options = ["nouuid"] if copied and record.fs_type == "xfs" else []
            mount.mount(
                device, mount_point, fs_type=record.fs_type, read_only=False, options=options
            )
            try:
                crash_point("create:set-up")
                if copied:
                    _close_copied_root(mount_point, encrypted=encrypted)
                elif encrypted:
                    if secret is None:
                        raise FailedPrecondition("an encrypted volume needs its secret to be made")
                    encryption.set_up(mount_point, secret, mode)
                else:
                    files.set_mode(mount_point, modes.VOLUME_ROOT if mode is None else mode)
            finally:
                mount.unmount(mount_point)
        files.remove_dir(mount_point)

    def node_expand(self, record: VolumeRecord) -> int:
        """Grow the mounted filesystem to fill its device; returns the filesystem size."""
        device = self._images.staged_device(record)
        if not record.staging_path or not mount.is_mount_point(record.staging_path):
            raise FailedPrecondition("volume's filesystem is not mounted on this node")
        return self._fill_device(record, device, Path(record.staging_path))

    def stage(
        self,
        record: VolumeRecord,
        staging: Path,
        *,
        read_only: bool,
        flags: list[str],
        secret: bytes | None = None,
    ) -> None:
        """Attach the image (reusing an attached device) and mount its filesystem; an
        encrypted volume is unlocked with ``secret``.

        Growth the record asks for and the host lacks is finished first, image first: the
        image is grown to the recorded size, the device told, and an ext4 grown before it
        is mounted (offline growth needs no CAP_SYS_RESOURCE), so a restage after a
        NodeExpandVolume that could not grow the mounted filesystem completes it.
        """
        device, attached_here = self._images.attach_for_stage(record)
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
            options = list(flags)
            if record.fs_type == "xfs":
                # Restores and clones carry their source's UUID; xfs refuses a second mount
                # of one UUID unless told the copies are independent.
                options.append("nouuid")
            mount.mount(
                device,
                staging,
                fs_type=record.fs_type,
                read_only=read_only,
                options=options,
                sensitive=flags,
            )
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

    def staged_on_host(self, record: VolumeRecord, staging: Path) -> bool:
        return mount.is_mount_point(staging)

    def still_in_use(self, record: VolumeRecord) -> bool:
        return targets.mounted_anywhere(record)

    def unstage(self, record: VolumeRecord, staging: Path) -> None:
        if record.spec.encrypted and mount.is_mount_point(staging):
            encryption.lock(staging)
        mount.unmount(staging)
        crash_point("unstage:unmounted")
        self._images.detach_unused(record)

    def publish(
        self,
        record: VolumeRecord,
        staging: Path,
        target: Path,
        *,
        read_only: bool,
        flags: list[str],
        group: int | None,
    ) -> None:
        targets.publish_filesystem(
            record, staging, target, read_only=read_only, flags=flags, group=group
        )

    def unpublish(self, record: VolumeRecord, target: Path) -> None:
        targets.unpublish_filesystem(target)

    def usage(self, record: VolumeRecord, path: Path) -> fs.Usage | int:
        return fs.usage(path)

    def freeze_points(self, record: VolumeRecord) -> list[str]:
        """The staging mount of a writable staged filesystem, frozen for a consistent copy."""
        staging = record.staging_path
        if not staging or record.staged_read_only:
            return []
        return [staging] if mount.is_mount_point(staging) else []

    @staticmethod
    def _fill_device(record: VolumeRecord, device: str, mount_point: Path) -> int:
        device_bytes = loopdev.device_size(device)
        current = resize.filesystem_size(device, record.fs_type) or 0
        if current < device_bytes:
            resize.grow_filesystem(device, str(mount_point), record.fs_type)
            # The on-disk superblock may lag the mounted filesystem's new size.
            current = device_bytes
        return current

    @staticmethod
    def _mounted_at(device: str, staging: Path) -> bool:
        return any(m.source == device for m in mount.mounts_at(staging))


def _close_copied_root(mount_point: Path, *, encrypted: bool) -> None:
    """What pods see of a copied filesystem loses its "other" bits; an encrypted one's root
    and salt become the driver's alone (chmod needs no key)."""
    if not encrypted:
        files.restrict(mount_point, modes.NO_OTHER)
        return
    files.restrict(mount_point, modes.ENCRYPTED_FS_ROOT)
    files.restrict(mount_point / encryption.SALT_FILE, modes.PRIVATE_FILE)
    files.restrict(encryption.data_dir(mount_point), modes.NO_OTHER)
