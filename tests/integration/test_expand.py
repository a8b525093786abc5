"""Volume expansion as a pod sees it, and loop volumes that hold to their size."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import grpc
import pytest

from tests.integration.snapshot_support import (
    Session,
    fill_until_full,
    fs_total,
    get,
    has_cap_sys_resource,
    put,
    used_under,
)
from tests.integration.support import record_growth_behind_the_driver
from tests.legacy_condition import legacy_condition
from tests.support.driver import running_driver
from tests.support.host import device_size, loops_for, mounts_at, read_at, write_at, write_error
from tests.support.kubelet import BLOCK, EXT4, MIB, XFS, Flavour, Kubelet
from tests.support.prerequisites import need_tool
from tests.support.status import rpc_error

DATA = b"must survive the expansion\n" * 200


def assert_fs_size(path: Path, size: int) -> None:
    """The filesystem at ``path`` spans (nearly all of) ``size`` bytes."""
    total = fs_total(path)
    assert 0.85 * size <= total <= size, f"filesystem at {path} spans {total}, wanted ~{size}"


def test_xfs_grows_online(session: Session) -> None:
    need_tool("mkfs.xfs")
    volume = session.create("xfs-grow", XFS)
    target = session.mount(volume, XFS)
    put(target, XFS, DATA)
    before = fs_total(target)
    assert before <= XFS.size

    grown = session.expand(volume, 400 * MIB)
    assert grown.capacity_bytes == 400 * MIB
    assert grown.node_expansion_required
    assert session.kubelet.image(volume).stat().st_size == 400 * MIB
    assert fs_total(target) == before, "the controller step alone must not touch the fs"
    capacity = session.node_expand(volume, target, 400 * MIB)
    # The reply names the grown size (xfs writes its superblock back only later, so the
    # driver must not read the size from the device right after growing).
    assert XFS.size < capacity <= 400 * MIB, f"NodeExpandVolume replied {capacity}"
    # Mounted, the filesystem gained (almost) all the 100 MiB added to the volume.
    gained = fs_total(target) - before
    assert 0.95 * 100 * MIB <= gained <= 100 * MIB, f"gained {gained} bytes"
    assert get(target, XFS, len(DATA)) == DATA
    stats = session.kubelet.stats(volume, target)
    assert stats.usage[0].total == fs_total(target)
    assert legacy_condition(stats) == (False, "volume is healthy")


def test_ext4_grows_offline_at_next_stage(session: Session) -> None:
    volume = session.create("ext4-offline", EXT4)
    target = session.mount(volume, EXT4)
    put(target, EXT4, DATA)
    session.unmount(volume, target)

    grown = session.expand(volume, 2 * EXT4.size)
    assert grown.capacity_bytes == 2 * EXT4.size
    assert grown.node_expansion_required
    target = session.mount(volume, EXT4, pod="after-expand")
    assert_fs_size(target, 2 * EXT4.size)
    assert fs_total(target) > EXT4.size
    assert get(target, EXT4, len(DATA)) == DATA


def test_ext4_online_growth_needs_cap_sys_resource(session: Session) -> None:
    volume = session.create("ext4-online", EXT4)
    target = session.mount(volume, EXT4)
    put(target, EXT4, DATA)
    assert session.expand(volume, 2 * EXT4.size).capacity_bytes == 2 * EXT4.size

    if has_cap_sys_resource():
        session.node_expand(volume, target, 2 * EXT4.size)
        assert_fs_size(target, 2 * EXT4.size)
    else:
        error = rpc_error(lambda: session.node_expand(volume, target, 2 * EXT4.size))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "CAP_SYS_RESOURCE" in (error.details() or "")
        assert fs_total(target) <= EXT4.size, "nothing grew, and nothing broke"
        # As the message promises: the filesystem grows when the volume is next staged.
        session.unmount(volume, target)
        target = session.mount(volume, EXT4, pod="restaged")
        assert_fs_size(target, 2 * EXT4.size)
    assert get(target, EXT4, len(DATA)) == DATA
    assert not session.condition(volume).abnormal


def test_block_device_grows_while_published(session: Session) -> None:
    volume = session.create("raw-grow", BLOCK)
    target = session.mount(volume, BLOCK)
    put(target, BLOCK, DATA)
    assert device_size(target) == BLOCK.size
    beyond_old_end = BLOCK.size + 5 * MIB
    assert write_error(target, beyond_old_end, b"x" * 512) == errno.ENOSPC

    grown = session.expand(volume, 2 * BLOCK.size)
    assert grown.capacity_bytes == 2 * BLOCK.size
    assert device_size(target) == 2 * BLOCK.size, "the pod's device must show the new size"
    assert session.node_expand(volume, target, 2 * BLOCK.size) == 2 * BLOCK.size
    write_at(target, beyond_old_end, b"new room")
    assert read_at(target, beyond_old_end, 8) == b"new room"
    assert get(target, BLOCK, len(DATA)) == DATA
    assert session.kubelet.stats(volume, target).usage[0].total == 2 * BLOCK.size


def test_expanding_to_smaller_size_changes_nothing(session: Session) -> None:
    volume = session.create("no-shrink", EXT4)
    target = session.mount(volume, EXT4)
    put(target, EXT4, DATA)
    before = fs_total(target)
    reply = session.expand(volume, EXT4.size // 2)
    assert reply.capacity_bytes == EXT4.size
    assert session.kubelet.image(volume).stat().st_size == EXT4.size
    assert fs_total(target) == before
    assert get(target, EXT4, len(DATA)) == DATA


def test_expansion_beyond_max_volume_size(tmp_path: Path) -> None:
    cap = 128 * MIB
    with running_driver(tmp_path / "capped", max_volume_size=cap) as running:
        session = Session(Kubelet(running.client, tmp_path / "kubelet", running.data_dir))
        try:
            volume = session.create("capped", EXT4)
            error = rpc_error(lambda: session.expand(volume, 2 * cap))
            assert error.code() == grpc.StatusCode.OUT_OF_RANGE
            assert session.kubelet.image(volume).stat().st_size == EXT4.size
            assert session.expand(volume, cap).capacity_bytes == cap
            assert session.kubelet.image(volume).stat().st_size == cap
        finally:
            session.tidy()


def test_loop_volume_refuses_writes_beyond_its_size(session: Session) -> None:
    volume = session.create("bounded", EXT4)
    target = session.mount(volume, EXT4)
    data_root = session.kubelet.data_dir
    os.sync()
    used_before = used_under(data_root)

    written, failure = fill_until_full(target / "too-much", 2 * EXT4.size)
    assert failure == errno.ENOSPC, f"wrote {written} bytes, then errno {failure}"
    assert written <= EXT4.size
    os.sync()
    dropped = used_under(data_root) - used_before
    assert dropped <= EXT4.size + 4 * MIB, f"the data root lost {dropped} bytes"
    assert session.kubelet.image(volume).stat().st_size == EXT4.size


def test_node_alone_grows_the_volume_when_controller_expansion_is_off(session: Session) -> None:
    """The per-node deployment: the resizer only marks the PVC, NodeExpandVolume does it all."""
    need_tool("mkfs.xfs")
    volume = session.create("xfs-node-only", XFS)
    target = session.mount(volume, XFS)
    put(target, XFS, DATA)
    before = fs_total(target)
    capacity = session.node_expand(volume, target, 400 * MIB)
    assert XFS.size < capacity <= 400 * MIB
    assert session.kubelet.image(volume).stat().st_size == 400 * MIB
    assert fs_total(target) - before >= 0.95 * 100 * MIB
    assert get(target, XFS, len(DATA)) == DATA


def test_controller_expansion_can_be_left_unadvertised(tmp_path: Path) -> None:
    from csi.pb import csi_pb2

    with running_driver(tmp_path / "data", controller_expansion=False) as running:
        caps = running.client.controller.ControllerGetCapabilities(
            csi_pb2.ControllerGetCapabilitiesRequest()
        )
        offered = {c.rpc.type for c in caps.capabilities}
        rpc = csi_pb2.ControllerServiceCapability.RPC
        assert rpc.EXPAND_VOLUME not in offered
        assert rpc.CREATE_DELETE_SNAPSHOT in offered


@pytest.mark.parametrize("flavour", [EXT4, XFS, BLOCK], ids=lambda f: f.id)
def test_stage_finishes_the_growth_the_record_asks_for(tmp_path: Path, flavour: Flavour) -> None:
    """Image first, then its device, then the filesystem (ext4 offline, before mounting)."""
    if flavour.fs_type == "xfs":
        need_tool("mkfs.xfs")
    data_dir, kubelet_root = tmp_path / "data", tmp_path / "kubelet"
    grown = 2 * flavour.size
    with running_driver(data_dir) as first:
        session = Session(Kubelet(first.client, kubelet_root, first.data_dir))
        try:
            volume = session.create("grow-at-stage", flavour)
            target = session.mount(volume, flavour)
            put(target, flavour, DATA)
            session.unmount(volume, target)
        except BaseException:
            session.tidy()
            raise
    record_growth_behind_the_driver(data_dir, volume, grown)
    image = data_dir / "images" / f"{volume}.img"
    assert image.stat().st_size == flavour.size

    with running_driver(data_dir) as second:
        kubelet = Kubelet(second.client, kubelet_root, second.data_dir)
        session = Session(kubelet)
        session.later(lambda: kubelet.delete(volume))
        try:
            for pod in ("after-growth", "restaged"):  # a restage changes nothing more
                target = session.mount(volume, flavour, pod=pod)
                assert image.stat().st_size == grown
                (device,) = loops_for(image)
                assert device_size(Path(device)) == grown, "the loop device kept its old size"
                if flavour.block:
                    assert device_size(target) == grown
                else:
                    assert_fs_size(target, grown)
                assert get(target, flavour, len(DATA)) == DATA
                # The kubelet's retry of the same stage is a no-op.
                kubelet.stage(volume, kubelet.staging(volume), flavour.cap())
                assert loops_for(image) == [device]
                if not flavour.block:
                    assert [m.source for m in mounts_at(kubelet.staging(volume))] == [device]
                assert not session.condition(volume).abnormal
                session.unmount(volume, target)
        finally:
            session.tidy()
