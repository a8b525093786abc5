"""Volume condition: what the driver reports after the host breaks a volume behind its back."""

from __future__ import annotations

from pathlib import Path

import pytest

from csi.pb import csi_pb2
from tests.integration.snapshot_support import Session
from tests.legacy_condition import legacy_condition
from tests.support.host import live, loops_for, mounts_at, sh
from tests.support.kubelet import DIRECTORY, EXT4, Flavour


def node_id(session: Session) -> str:
    return str(session.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest()).node_id)


def listed_status(session: Session, volume_id: str) -> csi_pb2.ListVolumesResponse.VolumeStatus:
    entries = session.controller.ListVolumes(csi_pb2.ListVolumesRequest()).entries
    (status,) = [e.status for e in entries if e.volume.volume_id == volume_id]
    found: csi_pb2.ListVolumesResponse.VolumeStatus = status
    return found


def conditions(session: Session, volume_id: str, path: Path | None) -> list[tuple[bool, str]]:
    """The 1.12 condition from ControllerGetVolume, ListVolumes and (given a path) the node."""
    found = [
        session.condition(volume_id),
        legacy_condition(listed_status(session, volume_id)),
    ]
    if path is not None:
        found.append(legacy_condition(session.kubelet.stats(volume_id, path)))
    assert all(c is not None for c in found), "a reply lacks the 1.12 condition"
    return [(c.abnormal, c.message) for c in found if c is not None]


def assert_healthy(session: Session, volume_id: str, path: Path | None = None) -> None:
    for abnormal, message in conditions(session, volume_id, path):
        assert not abnormal, f"healthy volume reported abnormal: {message}"


def assert_abnormal(session: Session, volume_id: str, path: Path | None, *words: str) -> list[str]:
    messages: list[str] = []
    for abnormal, message in conditions(session, volume_id, path):
        assert abnormal, f"broken volume reported healthy: {message}"
        assert any(w in message for w in words), f"{message!r} names none of {words}"
        messages.append(message)
    return messages


def test_published_nodes_follow_publish_and_unpublish(session: Session) -> None:
    volume = session.create("published", EXT4)
    get = csi_pb2.ControllerGetVolumeRequest(volume_id=volume)
    assert list(session.controller.ControllerGetVolume(get).status.published_node_ids) == []
    target = session.mount(volume, EXT4)
    me = node_id(session)
    assert list(session.controller.ControllerGetVolume(get).status.published_node_ids) == [me]
    assert list(listed_status(session, volume).published_node_ids) == [me]
    assert_healthy(session, volume, target)

    session.kubelet.unpublish(volume, target)
    assert list(session.controller.ControllerGetVolume(get).status.published_node_ids) == []
    assert list(listed_status(session, volume).published_node_ids) == []


def test_target_unmounted_behind_the_driver(session: Session) -> None:
    volume = session.create("lost-target", EXT4)
    target = session.mount(volume, EXT4)
    assert_healthy(session, volume, target)

    assert sh("umount", str(target)).returncode == 0
    assert not mounts_at(target)
    (message, *_) = assert_abnormal(session, volume, target, "target")
    assert "mounted" in message
    assert str(target) in message

    # Unpublishing puts it right again: the remaining staging mount is healthy.
    session.kubelet.unpublish(volume, target)
    assert not target.exists()
    assert_healthy(session, volume, session.kubelet.staging(volume))


def test_staging_unmounted_then_loop_detached(session: Session) -> None:
    volume = session.create("lost-staging", EXT4)
    staging = session.kubelet.staging(volume)
    session.later(lambda: session.kubelet.unstage(volume, staging))
    session.kubelet.stage(volume, staging, EXT4.cap())
    (device,) = loops_for(session.kubelet.image(volume))
    assert_healthy(session, volume, staging)

    assert sh("umount", str(staging)).returncode == 0
    assert_abnormal(session, volume, staging, "staging")
    assert sh("losetup", "-d", device).returncode == 0
    # udev (or another process's mount namespace) may still hold it: its detach is pending.
    assert not live(loops_for(session.kubelet.image(volume)))
    assert_abnormal(session, volume, staging, "detached")

    session.kubelet.unstage(volume, staging)
    assert_healthy(session, volume)


@pytest.mark.parametrize("flavour", [EXT4, DIRECTORY], ids=lambda f: f.id)
def test_missing_data_of_unstaged_volume(session: Session, flavour: Flavour) -> None:
    volume = session.create("lost-data", flavour)
    assert_healthy(session, volume)
    data = session.kubelet.artefact(volume, flavour)
    hidden = data.with_name(data.name + ".hidden")
    data.rename(hidden)
    try:
        messages = assert_abnormal(session, volume, None, "missing")
        assert all(str(data) in m for m in messages)
    finally:
        hidden.rename(data)
    assert_healthy(session, volume)
