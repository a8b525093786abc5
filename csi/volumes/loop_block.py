"""Loop block volumes: a sparse image on a loop device, handed to the pod as a raw device.

Staging attaches the image and mounts nothing: the attached device is the stage. Each
target is a bind mount of the device node; a read-only target gets a read-only device of
its own, since a read-only bind mount of a device node does not stop writes through it.
"""

from __future__ import annotations

from pathlib import Path

from csi.faults import crash_point
from csi.host import fs, loopdev, mount
from csi.state.records import VolumeRecord
from csi.volumes import targets
from csi.volumes.backend import LOOP_BLOCK, KindFacts
from csi.volumes.loop_image import ImageBackend


class LoopBlockBackend(ImageBackend):
    facts: KindFacts = LOOP_BLOCK

    def create(
        self, record: VolumeRecord, source: Path | None = None, secret: bytes | None = None
    ) -> None:
        self._images.create(record, source)

    def node_expand(self, record: VolumeRecord) -> int:
        return loopdev.device_size(self._images.staged_device(record))

    def stage(
        self,
        record: VolumeRecord,
        staging: Path,
        *,
        read_only: bool,
        flags: list[str],
        secret: bytes | None = None,
    ) -> None:
        """Attach the image (reusing an attached device), grown first to the recorded size."""
        self._images.attach_for_stage(record)

    def staged_on_host(self, record: VolumeRecord, staging: Path) -> bool:
        return self._images.device(record) is not None

    def still_in_use(self, record: VolumeRecord) -> bool:
        if record.staging_path and self._images.device(record) is not None:
            return True  # a staged block volume has no mount, only its loop device
        return targets.mounted_anywhere(record)

    def unstage(self, record: VolumeRecord, staging: Path) -> None:
        mount.unmount(staging)  # nothing is mounted there unless by hand; the call is a no-op
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
        """Bind the staged device onto ``target``; a read-only target that is not yet bound
        gets a read-only device of its own, detached again if the bind fails."""
        staged = self._images.device(record)
        if not read_only or staged is None or mount.is_mount_point(target):
            targets.publish_block(staged, target, read_only=read_only)
            return
        device = self._images.attach_read_only(record)
        try:
            targets.publish_block(device, target, read_only=True)
        except BaseException:
            self._images.release_read_only(record, device)
            raise

    def unpublish(self, record: VolumeRecord, target: Path) -> None:
        bound = targets.bound_device(target)
        targets.unpublish(target)
        crash_point("unpublish:unmounted")
        if bound is not None and loopdev.is_read_only(bound):
            self._images.release_read_only(record, bound)

    def usage(self, record: VolumeRecord, path: Path) -> fs.Usage | int:
        return self._images.capacity_on_disk(record)

    def freeze_points(self, record: VolumeRecord) -> list[str]:
        return []  # a raw device's content is the pod's to keep consistent
