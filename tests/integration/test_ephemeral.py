"""CSI ephemeral inline volumes: created at NodePublishVolume, gone at NodeUnpublishVolume."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from csi.layout import volume_id_for_name
from csi.pb import csi_pb2
from tests.integration.snapshot_support import fs_total
from tests.legacy_condition import legacy_condition
from tests.support.driver import RunningDriver
from tests.support.host import loops_for, mounts_at
from tests.support.kubelet import MIB, Kubelet, mount_capability
from tests.support.status import status_of

EPHEMERAL = "csi.storage.k8s.io/ephemeral"
POD_CONTEXT = {  # what kubelet adds to an inline volume's attributes
    EPHEMERAL: "true",
    "csi.storage.k8s.io/pod.name": "web-0",
    "csi.storage.k8s.io/pod.namespace": "default",
    "csi.storage.k8s.io/pod.uid": "7d5c4a52-0b7e-4c1a-9d53-3a2f0f2f6f10",
    "csi.storage.k8s.io/serviceAccount.name": "default",
}


def inline_id(pod: str) -> str:
    """An inline volume's ID as kubelet makes it: "csi-" and 64 hex digits."""
    return "csi-" + hashlib.sha256(pod.encode()).hexdigest()


class Inline:
    """Publishes inline volumes and unpublishes whatever is left at the end."""

    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet
        self.published: list[tuple[str, Path]] = []

    def publish(self, volume_id: str, target: Path, attributes: Mapping[str, str]) -> None:
        self.published.append((volume_id, target))
        self.kubelet.client.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume_id,
                staging_target_path="",
                target_path=str(target),
                volume_capability=mount_capability(),
                volume_context={**POD_CONTEXT, **attributes},
            )
        )

    def unpublish(self, volume_id: str, target: Path) -> None:
        self.kubelet.unpublish(volume_id, target)

    def tidy(self) -> None:
        for volume_id, target in reversed(self.published):
            status_of(lambda v=volume_id, t=target: self.unpublish(v, t))


@pytest.fixture
def inline(kubelet: Kubelet) -> Iterator[Inline]:
    started = Inline(kubelet)
    try:
        yield started
    finally:
        started.tidy()


def records(kubelet: Kubelet) -> list[str]:
    return sorted(p.name for p in (kubelet.data_dir / "state" / "volumes").iterdir())


def test_inline_loop_volume(inline: Inline, kubelet: Kubelet) -> None:
    volume_id = inline_id("web-0")
    target = kubelet.target("web-0", "scratch")
    inline.publish(volume_id, target, {"size": "64Mi"})

    image = kubelet.image(volume_id)
    assert image.is_file()
    assert image.stat().st_size == 64 * MIB
    (entry,) = mounts_at(target)
    assert entry.fs_type == "ext4", "default: a loop volume formatted ext4"
    assert loops_for(image) == [entry.source]
    total = fs_total(target)
    assert 0.8 * 64 * MIB <= total <= 64 * MIB, f"filesystem spans {total} bytes"
    (target / "scratch.txt").write_text("pod scratch data\n")
    assert (target / "scratch.txt").read_text() == "pod scratch data\n"
    assert kubelet.record(volume_id).is_file()
    stats = kubelet.stats(volume_id, target)
    assert stats.usage[0].total == total
    assert legacy_condition(stats) == (False, "volume is healthy")

    inline.unpublish(volume_id, target)
    assert not mounts_at(target)
    assert not target.exists(), "the target path must be removed"
    assert not image.exists(), "the inline volume's image must be deleted"
    assert not kubelet.record(volume_id).exists(), "the record must be removed"
    assert records(kubelet) == []
    assert loops_for(image) == []
    assert list((kubelet.data_dir / "images").iterdir()) == []
    leftovers = kubelet.data_dir / "ephemeral"
    assert not leftovers.exists() or list(leftovers.iterdir()) == []
    # kubelet may retry: unpublishing again must not fail.
    assert status_of(lambda: inline.unpublish(volume_id, target)).name in ("OK", "NOT_FOUND")


def test_inline_directory_volume(inline: Inline, kubelet: Kubelet) -> None:
    volume_id = inline_id("cache-1")
    target = kubelet.target("cache-1", "cache")
    inline.publish(volume_id, target, {"volumeType": "directory"})
    directory = kubelet.directory(volume_id)
    assert directory.is_dir()
    assert mounts_at(target), "the directory is bind-mounted at the target"
    (target / "hello").write_text("hi")
    assert (directory / "hello").read_text() == "hi", "the pod writes into the volume"

    inline.unpublish(volume_id, target)
    assert not mounts_at(target)
    assert not target.exists()
    assert not directory.exists()
    assert records(kubelet) == []


def test_two_pods_get_separate_inline_volumes(inline: Inline, kubelet: Kubelet) -> None:
    first, second = inline_id("a"), inline_id("b")
    target_a, target_b = kubelet.target("a", "tmp"), kubelet.target("b", "tmp")
    inline.publish(first, target_a, {"size": "32Mi"})
    inline.publish(second, target_b, {"size": "32Mi"})
    (target_a / "only-a").write_text("a")
    assert not (target_b / "only-a").exists()
    inline.unpublish(first, target_a)
    assert not kubelet.image(first).exists()
    assert mounts_at(target_b), "unpublishing one pod's volume leaves the other's alone"
    assert kubelet.image(second).is_file()


def test_an_inline_id_that_names_a_persistent_volume_is_refused(
    inline: Inline, kubelet: Kubelet, driver: RunningDriver
) -> None:
    """The kubelet chooses an inline volume's ID; one that is a persistent volume's ID must
    never publish that volume's files into the pod, nor stage it under the inline path."""
    persistent = kubelet.create("owned", {"volumeType": "directory"})
    (kubelet.data_dir / "volumes" / persistent / "secret.txt").write_text("the owner's")
    target = kubelet.target("intruder", "scratch")
    code = status_of(lambda: inline.publish(persistent, target, {"volumeType": "directory"}))
    assert code.name == "ALREADY_EXISTS"
    assert mounts_at(target) == []
    assert not (target / "secret.txt").exists()
    record = driver.driver.volumes.store.get(persistent)
    assert record is not None
    assert not record.in_use
    assert not record.ephemeral
    # Its owner stages and publishes it as before.
    staging = kubelet.staging(persistent)
    kubelet.stage(persistent, staging, mount_capability())
    kubelet.unstage(persistent, staging)
    kubelet.delete(persistent)


def test_create_refuses_a_name_whose_id_holds_another_volume(
    inline: Inline, kubelet: Kubelet, driver: RunningDriver
) -> None:
    """An inline volume's ID (the kubelet's choice) may be what CreateVolume derives from a
    name; CreateVolume of that name must not answer with the inline volume."""
    name = "pvc-taken"
    taken = volume_id_for_name(name)
    target = kubelet.target("first", "scratch")
    inline.publish(taken, target, {"volumeType": "directory"})
    code = status_of(lambda: kubelet.create(name, {"volumeType": "directory"}))
    assert code.name == "ALREADY_EXISTS"
    record = driver.driver.volumes.store.get(taken)
    assert record is not None
    assert record.ephemeral
