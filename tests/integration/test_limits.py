"""The node's limits hold on every path that adds or grows bytes: CreateVolume, restores,
clones, inline volumes, ControllerExpandVolume and NodeExpandVolume; one at a time and all at
once; a refused request leaves nothing behind."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from csi.pb import csi_pb2
from tests.support.driver import RunningDriver, running_driver
from tests.support.host import mounts_under
from tests.support.kubelet import MIB, Kubelet, mount_capability

DIRECTORY = {"volumeType": "directory"}
Call = Callable[[], object]


def code_of(call: Call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


class Node:
    """One driver and the requests of every path, on directory volumes (sizes are recorded
    and counted like any other volume's)."""

    def __init__(self, running: RunningDriver, root: Path) -> None:
        self.running = running
        self.kubelet = Kubelet(running.client, root / "kubelet", running.data_dir)
        self.controller = running.client.controller
        self.node = running.client.node

    def create(
        self, name: str, size: int, source: csi_pb2.VolumeContentSource | None = None
    ) -> str:
        request = csi_pb2.CreateVolumeRequest(
            name=name,
            parameters=DIRECTORY,
            capacity_range=csi_pb2.CapacityRange(required_bytes=size),
            volume_capabilities=[mount_capability()],
        )
        if source is not None:
            request.volume_content_source.CopyFrom(source)
        return str(self.controller.CreateVolume(request).volume.volume_id)

    def snapshot(self, volume_id: str) -> str:
        request = csi_pb2.CreateSnapshotRequest(
            name=f"snap-of-{volume_id}", source_volume_id=volume_id
        )
        return str(self.controller.CreateSnapshot(request).snapshot.snapshot_id)

    def restore(self, name: str, snapshot_id: str, size: int) -> str:
        source = csi_pb2.VolumeContentSource(
            snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snapshot_id)
        )
        return self.create(name, size, source)

    def clone(self, name: str, volume_id: str, size: int) -> str:
        source = csi_pb2.VolumeContentSource(
            volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=volume_id)
        )
        return self.create(name, size, source)

    def inline(self, pod: str, size: int) -> Path:
        target = self.kubelet.target(pod)
        self.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=inline_id(pod),
                target_path=str(target),
                volume_capability=mount_capability(),
                volume_context={
                    "csi.storage.k8s.io/ephemeral": "true",
                    **DIRECTORY,
                    "size": f"{size // MIB}Mi",
                },
            )
        )
        return target

    def expand(self, volume_id: str, size: int) -> None:
        self.controller.ControllerExpandVolume(
            csi_pb2.ControllerExpandVolumeRequest(
                volume_id=volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=size)
            )
        )

    def node_expand(self, volume_id: str, staging: Path, size: int) -> None:
        self.node.NodeExpandVolume(
            csi_pb2.NodeExpandVolumeRequest(
                volume_id=volume_id,
                volume_path=str(staging),
                staging_target_path=str(staging),
                capacity_range=csi_pb2.CapacityRange(required_bytes=size),
            )
        )

    def sizes(self) -> dict[str, int]:
        listed = self.controller.ListVolumes(csi_pb2.ListVolumesRequest())
        return {e.volume.volume_id: e.volume.capacity_bytes for e in listed.entries}

    def on_disk(self) -> set[str]:
        data = self.running.data_dir
        names = {p.name for p in (data / "state" / "volumes").iterdir()}
        names |= {p.name for p in (data / "volumes").iterdir()}
        inline = data / "ephemeral"
        return names | ({p.name for p in inline.iterdir()} if inline.exists() else set())

    def unpublish_inline(self, pod: str) -> None:
        self.kubelet.unpublish(inline_id(pod), self.kubelet.target(pod))


def inline_id(pod: str) -> str:
    return "csi-" + hashlib.sha256(pod.encode()).hexdigest()


@pytest.fixture
def limited(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Node]:
    with running_driver(tmp_path / "data", workers=16, **request.param) as running:
        yield Node(running, tmp_path)
    assert not mounts_under(tmp_path)


@pytest.mark.parametrize("limited", [{"max_volumes_per_node": 2}], indirect=True)
def test_the_volume_count_holds_on_every_path(limited: Node) -> None:
    first = limited.create("first", MIB)
    snapshot = limited.snapshot(first)
    second = limited.clone("second", first, MIB)
    before = limited.on_disk()
    refused = {
        "create": lambda: limited.create("third", MIB),
        "restore": lambda: limited.restore("restored", snapshot, MIB),
        "clone": lambda: limited.clone("cloned", first, MIB),
        "inline": lambda: limited.inline("pod-a", MIB),
    }
    codes = {path: code_of(call) for path, call in refused.items()}
    assert codes == dict.fromkeys(refused, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert limited.on_disk() == before
    assert not limited.kubelet.target("pod-a").exists() or not any(
        limited.kubelet.target("pod-a").iterdir()
    )
    # Room again once a volume goes: every path works.
    limited.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=second))
    target = limited.inline("pod-a", MIB)
    assert code_of(lambda: limited.restore("restored", snapshot, MIB)) is (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    limited.unpublish_inline("pod-a")
    assert not any(target.iterdir()) if target.exists() else True
    limited.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=first))
    limited.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot))


@pytest.mark.parametrize("limited", [{"capacity_limit": 10 * MIB}], indirect=True)
def test_the_capacity_limit_holds_on_every_path(limited: Node) -> None:
    first = limited.create("first", 6 * MIB)
    snapshot = limited.snapshot(first)
    staging = limited.kubelet.staging("first")
    limited.kubelet.stage(first, staging, mount_capability())
    before = limited.on_disk()
    refused = {
        "create": lambda: limited.create("big", 5 * MIB),
        "restore": lambda: limited.restore("restored", snapshot, 6 * MIB),
        "clone": lambda: limited.clone("cloned", first, 6 * MIB),
        "inline": lambda: limited.inline("pod-a", 5 * MIB),
        "controller expansion": lambda: limited.expand(first, 11 * MIB),
        "node expansion": lambda: limited.node_expand(first, staging, 11 * MIB),
    }
    codes = {path: code_of(call) for path, call in refused.items()}
    assert codes == dict.fromkeys(refused, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert limited.on_disk() == before
    assert limited.sizes() == {first: 6 * MIB}
    # What fits still passes, on both expansion paths.
    limited.expand(first, 8 * MIB)
    limited.node_expand(first, staging, 10 * MIB)
    assert limited.sizes() == {first: 10 * MIB}
    assert code_of(lambda: limited.inline("pod-b", MIB)) is grpc.StatusCode.RESOURCE_EXHAUSTED
    limited.kubelet.unstage(first, staging)
    limited.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=first))
    limited.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot))


@pytest.mark.parametrize("limited", [{"capacity_limit": 12 * MIB}], indirect=True)
def test_the_capacity_limit_holds_when_every_path_runs_at_once(limited: Node) -> None:
    first = limited.create("first", 2 * MIB)
    snapshot = limited.snapshot(first)
    other = limited.create("other", 2 * MIB)
    # 8 MiB left; 4 MiB each: at most two of these may pass, whichever they are.
    calls: dict[str, Call] = {}
    for i in range(3):
        calls[f"restore-{i}"] = lambda i=i: limited.restore(f"restored-{i}", snapshot, 4 * MIB)
        calls[f"clone-{i}"] = lambda i=i: limited.clone(f"cloned-{i}", first, 4 * MIB)
        calls[f"inline-{i}"] = lambda i=i: limited.inline(f"pod-{i}", 4 * MIB)
        calls[f"create-{i}"] = lambda i=i: limited.create(f"new-{i}", 4 * MIB)
    calls["expand"] = lambda: limited.expand(other, 6 * MIB)
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = {path: pool.submit(code_of, call) for path, call in calls.items()}
        codes = {path: f.result() for path, f in futures.items()}
    passed = [p for p, c in codes.items() if c is grpc.StatusCode.OK]
    assert set(codes.values()) <= {
        grpc.StatusCode.OK,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,  # a clone while another copies the same source
    }, codes
    assert 1 <= len(passed) <= 2, codes
    sizes = limited.sizes()  # inline volumes included
    assert sum(sizes.values()) <= 12 * MIB, (codes, sizes)
    for path in passed:
        if path.startswith("inline"):
            limited.unpublish_inline(f"pod-{path.rsplit('-', 1)[1]}")
    for volume_id in limited.sizes():
        limited.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))
    limited.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot))
    assert not (limited.running.data_dir / "state" / "volumes").exists() or not any(
        (limited.running.data_dir / "state" / "volumes").iterdir()
    )
