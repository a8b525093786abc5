"""Helpers for the snapshot, clone, expansion, health and ephemeral integration tests.

``Session`` plays the provisioner, the snapshotter and kubelet at once, and remembers how
to undo everything it did, so a failing test still unpublishes, unstages and deletes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from csi.pb import csi_pb2, csi_pb2_grpc
from tests.legacy_condition import Legacy, legacy_condition
from tests.support.host import read_at, write_at
from tests.support.kubelet import MIB, Flavour, Kubelet
from tests.support.status import status_of

GIB = 1024 * MIB
BLOCK_OFFSET = 3 * MIB + 17  # where block tests keep their bytes (not on a sector boundary)
DATA_FILE = "data.bin"
CAP_SYS_RESOURCE = 24


def has_cap_sys_resource() -> bool:
    """Does this process hold CAP_SYS_RESOURCE (bit 24 of CapEff)?"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


def fs_total(path: Path) -> int:
    """Bytes the filesystem mounted at ``path`` spans, as statvfs reports it."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def used_under(root: Path) -> int:
    """Bytes the files under ``root`` really occupy (holes excluded): what a test's own
    data root holds, whatever other processes do to the filesystem it is on."""
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*") if not p.is_symlink())


def allocated(path: Path) -> int:
    """Bytes a file really occupies on disk (holes excluded)."""
    return path.stat().st_blocks * 512


def put(target: Path, flavour: Flavour, data: bytes) -> None:
    """Write ``data`` the way a pod would: a file on a filesystem, or bytes on a device.

    The file is not fsynced: a snapshot of a mounted volume must flush it itself.
    """
    if flavour.block:
        write_at(target, BLOCK_OFFSET, data)
    else:
        (target / DATA_FILE).write_bytes(data)


def get(target: Path, flavour: Flavour, length: int) -> bytes:
    if flavour.block:
        return read_at(target, BLOCK_OFFSET, length)
    return (target / DATA_FILE).read_bytes()


def fill_until_full(path: Path, limit: int) -> tuple[int, int | None]:
    """Write 1 MiB chunks into the new file ``path`` until an error or ``limit`` bytes.

    Returns the bytes written and fsynced, and the errno that stopped it (None if none).
    """
    chunk = b"\xa5" * MIB
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while written < limit:
            written += os.write(fd, chunk)
        os.fsync(fd)
    except OSError as exc:
        return written, exc.errno
    finally:
        os.close(fd)
    return written, None


class Session:
    """Creates, mounts and snapshots volumes, and undoes it all in ``tidy``."""

    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet
        self.controller = kubelet.client.controller
        self.node = kubelet.client.node
        self.groups = csi_pb2_grpc.GroupControllerStub(kubelet.client.channel)
        self._undo: list[Callable[[], object]] = []

    def later(self, step: Callable[[], object]) -> None:
        """Run ``step`` at tidy time (last registered, first run)."""
        self._undo.append(step)

    def tidy(self) -> None:
        """Undo everything, newest first; errors are ignored (the volume may be gone)."""
        while self._undo:
            step = self._undo.pop()
            status_of(step)

    # -- controller ------------------------------------------------------------------
    def create_response(
        self,
        name: str,
        flavour: Flavour,
        *,
        size: int | None = None,
        limit: int = 0,
        snapshot_id: str = "",
        source_volume_id: str = "",
    ) -> csi_pb2.Volume:
        request = csi_pb2.CreateVolumeRequest(
            name=name,
            parameters=dict(flavour.params),
            capacity_range=csi_pb2.CapacityRange(
                required_bytes=flavour.size if size is None else size, limit_bytes=limit
            ),
            volume_capabilities=[flavour.cap()],
        )
        if snapshot_id:
            request.volume_content_source.snapshot.snapshot_id = snapshot_id
        if source_volume_id:
            request.volume_content_source.volume.volume_id = source_volume_id
        volume: csi_pb2.Volume = self.controller.CreateVolume(request).volume
        self.later(lambda: self.kubelet.delete(volume.volume_id))
        return volume

    def create(
        self,
        name: str,
        flavour: Flavour,
        *,
        size: int | None = None,
        snapshot_id: str = "",
        source_volume_id: str = "",
    ) -> str:
        volume = self.create_response(
            name, flavour, size=size, snapshot_id=snapshot_id, source_volume_id=source_volume_id
        )
        return str(volume.volume_id)

    def delete(self, volume_id: str) -> None:
        self.kubelet.delete(volume_id)

    def expand(self, volume_id: str, size: int) -> csi_pb2.ControllerExpandVolumeResponse:
        request = csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=size)
        )
        reply: csi_pb2.ControllerExpandVolumeResponse = self.controller.ControllerExpandVolume(
            request
        )
        return reply

    def snapshot(self, name: str, source_volume_id: str) -> csi_pb2.Snapshot:
        request = csi_pb2.CreateSnapshotRequest(name=name, source_volume_id=source_volume_id)
        snapshot: csi_pb2.Snapshot = self.controller.CreateSnapshot(request).snapshot
        self.later(lambda: self.delete_snapshot(snapshot.snapshot_id))
        return snapshot

    def delete_snapshot(self, snapshot_id: str) -> None:
        self.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id))

    def snapshot_file(self, snapshot_id: str) -> Path | None:
        """The snapshot's content under <data>/snapshots/, if any is there."""
        found = sorted((self.kubelet.data_dir / "snapshots").glob(f"{snapshot_id}.*"))
        return found[0] if found else None

    def condition(self, volume_id: str) -> Legacy | None:
        """The CSI 1.12 condition ControllerGetVolume reports."""
        request = csi_pb2.ControllerGetVolumeRequest(volume_id=volume_id)
        return legacy_condition(self.controller.ControllerGetVolume(request).status)

    # -- node ------------------------------------------------------------------------
    def mount(self, volume_id: str, flavour: Flavour, pod: str = "") -> Path:
        """Stage and publish ``volume_id`` for a pod; returns the target path."""
        staging = self.kubelet.staging(volume_id)
        target = self.kubelet.target(pod or f"pod-{volume_id}", "dev" if flavour.block else "vol")
        cap = flavour.cap()
        self.later(lambda: self.kubelet.unstage(volume_id, staging))
        self.kubelet.stage(volume_id, staging, cap)
        self.later(lambda: self.kubelet.unpublish(volume_id, target))
        self.kubelet.publish(volume_id, staging, target, cap)
        return target

    def unmount(self, volume_id: str, target: Path) -> None:
        """Unpublish ``target`` and unstage the volume (the caller's staging path)."""
        self.kubelet.unpublish(volume_id, target)
        self.kubelet.unstage(volume_id, self.kubelet.staging(volume_id))

    def node_expand(self, volume_id: str, path: Path, size: int) -> int:
        request = csi_pb2.NodeExpandVolumeRequest(
            volume_id=volume_id,
            volume_path=str(path),
            capacity_range=csi_pb2.CapacityRange(required_bytes=size),
        )
        return int(self.node.NodeExpandVolume(request).capacity_bytes)
