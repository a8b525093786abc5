"""A loop volume's image file and its loop devices, shared by the filesystem and block kinds."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from csi.errors import FailedPrecondition
from csi.faults import crash_point
from csi.host import files, loopdev, mount
from csi.host.copy import clone_or_copy
from csi.host.fs import create_sparse_file, durable_rename
from csi.layout import Layout
from csi.state.records import AccessType, VolumeRecord

log = logging.getLogger(__name__)


class LoopImages:
    """The images under a data root: made, grown, attached and detached."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        # Two `losetup --find` at once pick the same free device and the loser backs off for
        # 200 ms; attaching takes about a millisecond, so this driver attaches one at a time.
        self._attaching = threading.Lock()

    def attach(self, image: Path, *, read_only: bool = False) -> tuple[str, bool]:
        """The image's loop device and whether this call attached it: a writable device is
        shared (one per image, reused when attached), a read-only one is always new."""
        with self._attaching:
            if not read_only:
                existing = loopdev.devices_for(image)
                if existing:
                    return existing[0], False
            return loopdev.attach(image, read_only=read_only), True

    @contextlib.contextmanager
    def scratch(self, image: Path) -> Iterator[str]:
        """A loop device of ``image`` for the driver's own brief work, gone by itself after
        (csi.host.loopdev.ScratchDevice), even if the driver dies meanwhile."""
        with self._attaching:
            held = loopdev.ScratchDevice(image)
        try:
            yield held.device
        finally:
            held.release()

    def path(self, record: VolumeRecord) -> Path:
        return self.layout.image_path(record.volume_id)

    @staticmethod
    def copy_content(source: Path, destination: Path) -> None:
        clone_or_copy(source, destination)

    def create(
        self,
        record: VolumeRecord,
        source: Path | None,
        prepare: Callable[[Path], None] | None = None,
        settle_copy: Callable[[Path], None] | None = None,
    ) -> None:
        """Build the image under a scratch name and rename it into place when complete.

        A new image is sparse, then ``prepare``d (formatted) while it has its scratch name.
        With ``source`` (a snapshot or another volume's image) the image starts as a copy
        of it, grown to the record's size, then ``settle_copy``d; the filesystem is grown
        when the volume is staged.
        The final name only ever holds a finished image, so a retry after a crash either
        finds it done or starts the scratch file again.
        """
        final = self.path(record)
        if final.is_file():
            return
        partial = self.layout.partial(final)
        files.remove_file(partial)
        try:
            if source is None:
                create_sparse_file(partial, record.capacity_bytes)
                crash_point("create:image")
                if prepare is not None:
                    prepare(partial)
                crash_point("create:formatted")
            else:
                self.copy_content(source, partial)
                files.extend(partial, record.capacity_bytes)
                if settle_copy is not None:
                    settle_copy(partial)
            durable_rename(partial, final)
        except BaseException:
            files.remove_file(partial)
            raise

    def delete(self, record: VolumeRecord) -> None:
        final = self.path(record)
        for device in loopdev.devices_for(final, read_only=None):
            if mount.mounts_of_device(device):
                raise FailedPrecondition(f"volume is still mounted through {device}")
            self._release_stacked(record, device)
            loopdev.detach(device)
        files.remove_file(final)
        partial = self.layout.partial(final)
        for device in loopdev.devices_for(partial, read_only=None):
            loopdev.detach(device)  # a crashed creation's, never one to keep
        files.remove_file(partial)

    def device(self, record: VolumeRecord) -> str | None:
        """The image's writable loop device, if one is attached."""
        devices = loopdev.devices_for(self.path(record))
        return devices[0] if devices else None

    def staged_device(self, record: VolumeRecord) -> str:
        """The attached device of a staged volume, told of the image's size."""
        device = self.device(record)
        if device is None:
            raise FailedPrecondition("volume is not staged on this node")
        loopdev.refresh_size(device)
        return device

    def attach_for_stage(self, record: VolumeRecord) -> tuple[str, bool]:
        """Attach the image (reusing an attached device), grown first to the recorded size
        if a crash or a failed growth left it smaller; the device is told any new size.
        Returns the device and whether this call attached it."""
        image = self.path(record)
        if not image.is_file():
            raise FailedPrecondition("the volume's image file is missing on this node")
        size = grow_image(image, record.capacity_bytes)
        device, attached_here = self.attach(image)
        crash_point("stage:attached")
        if not attached_here and loopdev.device_size(device) < size:
            loopdev.refresh_size(device)
        return device, attached_here

    def detach_unused(self, record: VolumeRecord) -> None:
        """Detach the image's devices that nothing mounts any more."""
        for device in loopdev.devices_for(self.path(record), read_only=None):
            if not mount.mounts_of_device(device):
                self._release_stacked(record, device)
                loopdev.detach(device)

    @staticmethod
    def _release_stacked(record: VolumeRecord, device: str) -> None:
        """Detach loop devices stacked on a raw block volume's ``device`` that nothing mounts.
        The kubelet stacks one on a published block device and removes it when it unmaps the
        pod; one still there when the volume is unstaged or deleted is stale (a kind node's
        container restarted: the kubelet forgot it, the kernel kept it). Left, it would hold
        our device open, our detach would wait for ever, and a deleted image's blocks with it."""
        if record.spec.access_type is not AccessType.BLOCK:
            return
        for stacked in loopdev.stacked_on(device):
            if not mount.mounts_of_device(stacked):
                log.warning("event=stale_stacked_loop_detached device=%s on=%s", stacked, device)
                loopdev.detach(stacked)

    def expand(self, record: VolumeRecord, size: int) -> None:
        """Grow the image file (sparse) and tell an attached loop device its new size."""
        image = self.path(record)
        size = grow_image(image, size)
        for device in loopdev.devices_for(image, read_only=None):
            if loopdev.device_size(device) < size:
                loopdev.refresh_size(device)

    def capacity_on_disk(self, record: VolumeRecord) -> int:
        try:
            return self.path(record).stat().st_size
        except FileNotFoundError:
            return record.capacity_bytes

    def attach_read_only(self, record: VolumeRecord) -> str:
        """A read-only loop device of its own, for a read-only block publish: a read-only
        bind mount cannot stop writes through a device node, a read-only device can."""
        device, _ = self.attach(self.path(record), read_only=True)
        return device

    def release_read_only(self, record: VolumeRecord, device: str) -> None:
        """Detach a read-only device once nothing binds it any more."""
        mine = device in loopdev.devices_for(self.path(record), read_only=True)
        if mine and not mount.mounts_of_device(device):
            loopdev.detach(device)


def grow_image(image: Path, size: int) -> int:
    """Grow the image file (sparse, durably) to at least ``size``; returns its size."""
    return files.grow_durably(image, size)


class ImageBackend:
    """What both loop backends (filesystem and raw block) do the same way: their volume is
    an image file, copied, removed, sized and grown through ``LoopImages``."""

    def __init__(self, images: LoopImages) -> None:
        self._images = images
        self._layout = images.layout

    def path(self, record: VolumeRecord) -> Path:
        return self._images.path(record)

    def copy_content(self, source: Path, destination: Path) -> None:
        self._images.copy_content(source, destination)

    def project_for_new_volume(self) -> int | None:
        return None  # an image holds its size itself

    def delete(self, record: VolumeRecord) -> None:
        self._images.delete(record)

    def capacity_on_disk(self, record: VolumeRecord) -> int:
        return self._images.capacity_on_disk(record)

    def expand(self, record: VolumeRecord, size: int) -> None:
        self._images.expand(record, size)
