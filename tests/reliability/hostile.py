"""Shared by the hostile-caller tests (races, bad input, secrets, fuzz).

Not a conftest: test modules import what they need. The host probes come from the
integration tier's support module, which reads mountinfo and sysfs itself, so a bug in the
driver's own parsing cannot hide a leak.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from csi.layout import Layout
from csi.pb import csi_pb2
from csi.state.store import volume_json
from tests.helpers import Client, mount_capability, need_root
from tests.integration.support import force_cleanup, loops_for, loops_under, mounts_under

MIB = 1024 * 1024
EXT4 = {"volumeType": "loop", "fsType": "ext4"}
DIRECTORY = {"volumeType": "directory"}
OK = grpc.StatusCode.OK
Entry = tuple[int, int, int, str]  # mode, size, mtime_ns, content hash or link target


@contextmanager
def no_leaks(root: Path) -> Iterator[None]:
    """Needs root; afterwards no mount or loop device under ``root`` may remain."""
    need_root()
    yield
    leaked_mounts, leaked_loops = mounts_under(root), loops_under(root)
    force_cleanup(root)
    assert not leaked_mounts, f"mounts left behind: {leaked_mounts}"
    assert not leaked_loops, f"loop devices left attached: {leaked_loops}"


def make_canary(path: Path) -> Path:
    """A small tree outside the data root that no request may create, change or remove."""
    (path / "sub" / "deeper").mkdir(parents=True)
    (path / "empty").mkdir()
    (path / "a.txt").write_text("canary a\n")
    (path / "b.bin").write_bytes(bytes(range(256)) * 16)
    (path / "sub" / "c.txt").write_text("canary c\n")
    (path / "sub" / "deeper" / "d.txt").write_text("canary d\n")
    return path


def listing(root: Path, skip: Path | None = None) -> dict[str, Entry]:
    """Every entry under ``root`` (itself included), symlinks not followed."""
    found: dict[str, Entry] = {}

    def visit(path: Path) -> None:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            digest = os.readlink(path)
        else:
            digest = ""
        found[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
        if stat.S_ISDIR(st.st_mode):
            for child in sorted(os.listdir(path)):
                if skip is None or path / child != skip:
                    visit(path / child)

    visit(root)
    return found


def names_under(root: Path, skip: Path | None = None) -> set[str]:
    return set(listing(root, skip)) if root.exists() else set()


def status(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """Run ``call``; its status code and details."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return OK, ""


def race(*calls: Callable[[], object], stagger: float = 0.0) -> list[grpc.StatusCode]:
    """Start the calls together from their own threads, the i-th ``i * stagger`` seconds
    late (rounds vary it to reach every interleaving); their status codes, in order."""
    barrier = threading.Barrier(len(calls))

    def go(index: int) -> grpc.StatusCode:
        barrier.wait(timeout=30)
        time.sleep(index * stagger)
        return status(calls[index])[0]

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(go, range(len(calls))))


def read_record(data_dir: Path, volume_id: str) -> dict[str, Any] | None:
    return volume_json(Layout(data_dir), volume_id)  # its node-use file laid over it


def rpc(channel: grpc.Channel, method: MethodDescriptor) -> Callable[..., Any]:
    """A callable for any CSI method, found through the service descriptors."""
    request = getattr(csi_pb2, method.input_type.name)
    response = getattr(csi_pb2, method.output_type.name)
    path = f"/csi.v1.{method.containing_service.name}/{method.name}"
    make = channel.unary_stream if method.server_streaming else channel.unary_unary
    call = make(path, request.SerializeToString, response.FromString)
    if not method.server_streaming:
        return call
    return lambda req, **kw: list(call(req, **kw))


def methods(*services: str) -> list[MethodDescriptor]:
    names = services or tuple(csi_pb2.DESCRIPTOR.services_by_name)
    return [m for s in names for m in csi_pb2.DESCRIPTOR.services_by_name[s].methods]


def new_request(method: MethodDescriptor) -> Message:
    message: Message = getattr(csi_pb2, method.input_type.name)()
    return message


@dataclass
class Caller:
    """Plays kubelet and provisioner, with paths under ``root`` (outside the data root)."""

    client: Client
    root: Path

    def staging(self, name: str) -> Path:
        path = self.root / "staging" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def target(self, name: str) -> Path:
        parent = self.root / "pods" / name
        parent.mkdir(parents=True, exist_ok=True)
        return parent / "mount"

    def create(self, name: str, params: dict[str, str] = EXT4, size: int = 16 * MIB) -> str:
        request = csi_pb2.CreateVolumeRequest(
            name=name,
            parameters=params,
            capacity_range=csi_pb2.CapacityRange(required_bytes=size),
            volume_capabilities=[mount_capability()],
        )
        return str(self.client.controller.CreateVolume(request).volume.volume_id)

    def delete(self, volume_id: str) -> None:
        self.client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))

    def stage(self, volume_id: str, staging: Path, flags: tuple[str, ...] = ()) -> None:
        self.client.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume_id,
                staging_target_path=str(staging),
                volume_capability=mount_capability(flags=flags),
            )
        )

    def unstage(self, volume_id: str, staging: Path) -> None:
        self.client.node.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=str(staging))
        )

    def publish(self, volume_id: str, staging: Path, target: Path) -> None:
        self.client.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume_id,
                staging_target_path=str(staging),
                target_path=str(target),
                volume_capability=mount_capability(),
            )
        )

    def unpublish(self, volume_id: str, target: Path) -> None:
        self.client.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target))
        )


def check_consistent(data_dir: Path, kubelet: Path, volume_id: str) -> bool:
    """The volume either exists with a record covering the host, or is entirely gone.

    Returns whether it exists.
    """
    record = read_record(data_dir, volume_id)
    image = data_dir / "images" / f"{volume_id}.img"
    mounted = set(mounts_under(kubelet))
    loops = loops_for(image)
    assert not list(data_dir.glob("images/*.partial")), "a scratch image was left behind"
    if record is None:
        assert not image.exists(), "no record, but the image file is still there"
        assert not mounted, f"no record, but mounts remain: {mounted}"
        assert not loops, f"no record, but loop devices remain: {loops}"
        return False
    assert record["phase"] == "ready", record
    assert image.is_file(), "the record is ready but the image is missing"
    assert len(loops) <= 1, f"more than one loop device for one image: {loops}"
    known = {record["staging_path"], *record["targets"]} - {""}
    assert mounted <= known, f"mounts {mounted - known} are not in the record"
    if mounted:
        assert loops, "a mounted volume has no loop device"
        assert record["staging_path"] in mounted, "published but the staging mount is gone"
    return True
