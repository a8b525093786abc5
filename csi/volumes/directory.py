"""Directory volumes: a directory under the data root, bind-mounted where it is used.

Staging mounts nothing: the record is the stage, and each publish binds the volume's own
directory straight onto its target (with the stage's read-only flag). A staging bind left
by an older driver is still a use of the volume, and unstage removes it.

A volume whose record names a project ID is held to its size by the filesystem's project
quota (csi.volumes.quotas): the directory joins its project while still empty, before any
content is copied in, so a clone or restore is held to the new size too; growing raises the
limit online; deleting lifts it once the directory is gone. A volume without one (made
where quotas are off, or by an older driver) is sized in its record only.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from csi.errors import FailedPrecondition
from csi.host import files, fs, modes, mount, quota
from csi.host.copy import copy_tree
from csi.host.fs import durable_rename
from csi.layout import Layout
from csi.state.records import VolumeRecord
from csi.volumes import targets
from csi.volumes.backend import DIRECTORY, KindFacts
from csi.volumes.quotas import DirectoryQuotas


class DirectoryBackend:
    facts: KindFacts = DIRECTORY

    def __init__(self, layout: Layout, quotas: DirectoryQuotas) -> None:
        self._layout = layout
        self._quotas = quotas

    def path(self, record: VolumeRecord) -> Path:
        return self._layout.directory_path(record.volume_id)

    def copy_content(self, source: Path, destination: Path) -> None:
        copy_tree(source, destination)

    def _copy_held(self, source: Path, destination: Path) -> None:
        """Copy into the held, empty ``destination``: the copy is charged to its project
        and, like a pod's writes, refused past the limit (the driver's privilege to
        exceed a quota set aside while it copies: ext4 lets CAP_SYS_RESOURCE past it)."""
        with quota.held_to_limits():
            copy_tree(source, destination, existing=True)

    def project_for_new_volume(self) -> int | None:
        return self._quotas.project_for_new_volume()

    def create(
        self, record: VolumeRecord, source: Path | None = None, secret: bytes | None = None
    ) -> None:
        """Make the directory (a copy of ``source`` if given); a retry redoes the work.

        A new directory's root gets the StorageClass's mode or modes.VOLUME_ROOT (no access
        for "other": the pod's fsGroup gets it at publish); a copy keeps its source's modes,
        less the root's "other" bits unless the class names a mode."""
        final = self.path(record)
        if final.is_dir():
            return
        partial = self._layout.partial(final)
        files.remove(partial)
        project = record.project_id
        try:
            if project is not None:  # held while empty: a copy into it is charged too
                files.make_dir(partial)
                self._quotas.hold(partial, project, record.capacity_bytes)
            if source is None:
                if project is None:
                    files.make_dir(partial)
                mode = record.spec.mode
                files.set_mode(partial, modes.VOLUME_ROOT if mode is None else mode)
            else:
                copy = self.copy_content if project is None else self._copy_held
                copy(source, partial)
                if record.spec.mode is None:
                    files.restrict(partial, modes.NO_OTHER)
            durable_rename(partial, final)
        except BaseException:
            with contextlib.suppress(OSError):
                files.remove(partial)
            raise

    def delete(self, record: VolumeRecord) -> None:
        final = self.path(record)
        doomed = self._layout.doomed(final)
        if final.exists():
            if mount.mounts_under(final):
                raise FailedPrecondition("volume directory still has mounts beneath it")
            # Not fsynced: the record already says ``deleting`` durably, and a retry (or
            # start-up reconciliation) finishes the delete under either name.
            files.move(final, doomed)
        files.remove(doomed)
        files.remove(self._layout.partial(final))
        if record.project_id is not None:
            self._quotas.lift(record.project_id)

    def capacity_on_disk(self, record: VolumeRecord) -> int:
        return record.capacity_bytes

    def expand(self, record: VolumeRecord, size: int) -> None:
        """Raise the project's limit (online: the pod sees the new size at once); a volume
        without a project is sized in its record only."""
        if record.project_id is not None:
            self._quotas.grow(record.project_id, size)

    def node_expand(self, record: VolumeRecord) -> int:
        return record.capacity_bytes

    def stage(
        self,
        record: VolumeRecord,
        staging: Path,
        *,
        read_only: bool,
        flags: list[str],
        secret: bytes | None = None,
    ) -> None:
        """Nothing to mount: publish binds the directory itself. The directory must be
        there, so a stage of a volume whose data went missing fails now, not at publish."""
        data = self.path(record)
        if not data.is_dir():
            raise FailedPrecondition(f"the volume's data directory {data} is missing")

    def staged_on_host(self, record: VolumeRecord, staging: Path) -> bool:
        """The record is the stage (or an older driver's bind mount there)."""
        return record.staging_path == str(staging) or mount.is_mount_point(staging)

    def still_in_use(self, record: VolumeRecord) -> bool:
        """Published, or staged: the record names a staging path the orchestrator still
        has (it removes the path once unstaged, so a stage recorded before a power loss
        and undone after it does not hold the volume forever)."""
        staged = bool(record.staging_path) and Path(record.staging_path).is_dir()
        return staged or targets.mounted_anywhere(record)

    def unstage(self, record: VolumeRecord, staging: Path) -> None:
        mount.unmount(staging)  # a bind an older driver made there; else a no-op

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
        targets.publish_directory(
            self.path(record),
            target,
            read_only=read_only or record.staged_read_only,
            flags=flags,
            group=group,
            scratch=self._layout.setup_path(f"{record.volume_id}-publish"),
        )

    def unpublish(self, record: VolumeRecord, target: Path) -> None:
        targets.unpublish_filesystem(target)

    def usage(self, record: VolumeRecord, path: Path) -> fs.Usage | int:
        """The volume directory's filesystem, asked at any of its paths (the staging path
        holds no mount of its own)."""
        return fs.usage(self.path(record))

    def freeze_points(self, record: VolumeRecord) -> list[str]:
        return []  # a tree is copied file by file; there is no filesystem of its own to freeze
