"""CSI 1.13 health without root: the table of conditions and the README's, the wire answers
(1.13 entries, the 1.12 condition as a 1.12 client reads it), the RPCs' errors, the data
root's conditions, snapshot topology, and the pure parts of extent arithmetic."""

from __future__ import annotations

import os
import re
from pathlib import Path

import grpc
import pytest

from csi.host import extents, loopspace, mount
from csi.layout import volume_id_for_name
from csi.pb import csi_pb2
from csi.services import legacy_condition
from csi.state.records import AccessType, PublishedTarget, VolumeKind, VolumeRecord, VolumeSpec
from csi.volumes import storage_health
from csi.volumes.conditions import MAX_MESSAGE, TABLE, Condition, Problem, found
from csi.volumes.health import HostView
from tests.legacy_condition import legacy_condition as read_legacy
from tests.support.driver import RunningDriver, running_driver
from tests.support.status import status_of
from tests.unit.support import DIRECTORY, NODE, TOPOLOGY_KEY, create

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `(?P<reason>[A-Za-z]+)` \| (?P<status>[A-Z_]+) \|", re.MULTILINE)


def test_readme_lists_exactly_the_table() -> None:
    documented = {(m["reason"], m["status"]) for m in ROW.finditer(README.read_text())}
    assert documented == {(row.reason, row.status.value) for row in TABLE.values()}


def test_every_problem_has_one_stable_camelcase_reason() -> None:
    assert set(TABLE) == set(Problem)
    reasons = [row.reason for row in TABLE.values()]
    assert len(set(reasons)) == len(reasons)
    assert all(re.fullmatch(r"(?:[A-Z][a-z0-9]*)+", r) and len(r) <= 256 for r in reasons)


def test_messages_are_bounded_for_kubernetes() -> None:
    long = found(Problem.STAGING_MOUNT_GONE, path="/x" * 2000)
    assert len(long.message.encode()) <= MAX_MESSAGE
    assert long.message.endswith("...")


# -- the wire ------------------------------------------------------------------------------
def test_legacy_condition_reads_back_as_csi_1_12() -> None:
    status = csi_pb2.ListVolumesResponse.VolumeStatus(published_node_ids=["n"])
    legacy_condition.attach(status, found(Problem.LOOP_DETACHED))
    assert read_legacy(status) == (True, "the volume is staged but its loop device is detached")
    # A 1.13 client parses the same bytes and keeps what it knows.
    again = csi_pb2.ListVolumesResponse.VolumeStatus.FromString(status.SerializeToString())
    assert list(again.published_node_ids) == ["n"]
    healthy = csi_pb2.NodeGetVolumeStatsResponse()
    legacy_condition.attach(healthy, Condition(False, "volume is healthy"))
    assert read_legacy(healthy) == (False, "volume is healthy")


def test_health_rpcs_for_a_healthy_volume(driver: RunningDriver) -> None:
    volume = create(driver.client, "healthy", parameters=DIRECTORY).volume_id
    controller, node = driver.client.controller, driver.client.node
    got = controller.ControllerGetVolumeHealth(
        csi_pb2.ControllerGetVolumeHealthRequest(volume_id=volume)
    ).volume_health
    assert (got.volume_id, list(got.health_statuses)) == (volume, [])
    listed = controller.ControllerListVolumeHealth(csi_pb2.ControllerListVolumeHealthRequest())
    assert (list(listed.entries), listed.next_token) == ([], "")
    got = node.NodeGetVolumeHealth(csi_pb2.NodeGetVolumeHealthRequest(volume_id=volume))
    assert list(got.volume_health.health_statuses) == []
    reply = controller.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id=volume))
    assert read_legacy(reply.status) == (False, "volume is healthy")


def test_a_missing_directory_is_data_loss_everywhere(driver: RunningDriver) -> None:
    volume = create(driver.client, "lost", parameters=DIRECTORY).volume_id
    os.rename(driver.data_dir / "volumes" / volume, driver.data_dir / "elsewhere")
    controller = driver.client.controller
    (entry,) = controller.ControllerGetVolumeHealth(
        csi_pb2.ControllerGetVolumeHealthRequest(volume_id=volume)
    ).volume_health.health_statuses
    assert (entry.status, entry.reason) == (csi_pb2.DATA_LOSS, "VolumeDataMissing")
    (listed,) = controller.ControllerListVolumeHealth(
        csi_pb2.ControllerListVolumeHealthRequest()
    ).entries
    assert listed.volume_id == volume
    legacy = read_legacy(
        controller.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id=volume)).status
    )
    assert legacy is not None
    assert legacy.abnormal
    assert legacy.message == entry.message


def test_list_volume_health_pages(driver: RunningDriver) -> None:
    ids = sorted(create(driver.client, f"p{i}", parameters=DIRECTORY).volume_id for i in range(3))
    for volume in ids:
        os.rename(driver.data_dir / "volumes" / volume, driver.data_dir / f"x-{volume}")
    seen: list[str] = []
    token = ""
    while True:
        page = driver.client.controller.ControllerListVolumeHealth(
            csi_pb2.ControllerListVolumeHealthRequest(max_entries=2, starting_token=token)
        )
        assert len(page.entries) <= 2
        seen += [e.volume_id for e in page.entries]
        token = page.next_token
        if not token:
            break
    assert seen == ids


def test_health_rpc_errors(driver: RunningDriver) -> None:
    controller, node = driver.client.controller, driver.client.node
    unknown = volume_id_for_name("never-made")
    cases = [
        (
            lambda: controller.ControllerGetVolumeHealth(
                csi_pb2.ControllerGetVolumeHealthRequest()
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            lambda: controller.ControllerGetVolumeHealth(
                csi_pb2.ControllerGetVolumeHealthRequest(volume_id=unknown)
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            lambda: controller.ControllerListVolumeHealth(
                csi_pb2.ControllerListVolumeHealthRequest(starting_token="bogus")
            ),
            grpc.StatusCode.ABORTED,
        ),
        (
            lambda: controller.ControllerListVolumeHealth(
                csi_pb2.ControllerListVolumeHealthRequest(max_entries=-1)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            lambda: node.NodeGetVolumeHealth(csi_pb2.NodeGetVolumeHealthRequest()),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            lambda: node.NodeGetVolumeHealth(csi_pb2.NodeGetVolumeHealthRequest(volume_id=unknown)),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            lambda: node.NodeGetVolumeHealth(
                csi_pb2.NodeGetVolumeHealthRequest(
                    volume_id=unknown, volume_publish_path="relative"
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for call, code in cases:
        assert status_of(call) == code


def test_1_13_only_when_the_legacy_condition_is_off(tmp_path: Path) -> None:
    with running_driver(tmp_path / "data", legacy_volume_condition=False) as driver:
        volume = create(driver.client, "new-only", parameters=DIRECTORY).volume_id
        caps = driver.client.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest())
        assert legacy_condition.NODE_CAPABILITY not in {c.rpc.type for c in caps.capabilities}
        caps = driver.client.controller.ControllerGetCapabilities(
            csi_pb2.ControllerGetCapabilitiesRequest()
        )
        types = {c.rpc.type for c in caps.capabilities}
        assert legacy_condition.CONTROLLER_CAPABILITY not in types
        reply = driver.client.controller.ControllerGetVolume(
            csi_pb2.ControllerGetVolumeRequest(volume_id=volume)
        )
        assert read_legacy(reply.status) is None


# -- the data root -------------------------------------------------------------------------
def test_storage_health_of_a_missing_root(tmp_path: Path) -> None:
    (problem,) = storage_health.check(tmp_path / "nowhere", loop_volumes=False)
    assert problem.problem is Problem.ROOT_MISSING


def test_storage_health_rpc_answers(driver: RunningDriver) -> None:
    reply = driver.client.node.NodeGetStorageHealth(csi_pb2.NodeGetStorageHealthRequest())
    reasons = {b.reason for b in reply.backend_health}
    assert reasons <= {row.reason for row in TABLE.values()}


def test_loop_devices_run_out_only_without_loop_control(tmp_path: Path) -> None:
    sys_block = tmp_path / "block"
    for name, bound in (("loop0", True), ("loop1", True), ("sda", False)):
        (sys_block / name / "loop").mkdir(parents=True)
        if bound:
            (sys_block / name / "loop" / "backing_file").write_text("/x\n")
    space = loopspace.read(sys_block, tmp_path / "no-loop-control")
    assert (space.devices, space.bound, space.exhausted) == (2, 2, True)
    assert not loopspace.read(sys_block, Path("/dev/null")).exhausted  # a char device
    (sys_block / "loop2" / "loop").mkdir(parents=True)
    assert not loopspace.read(sys_block, tmp_path / "no-loop-control").exhausted


# -- snapshot topology ---------------------------------------------------------------------
def test_snapshots_say_where_they_are(driver: RunningDriver) -> None:
    identity = driver.client.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    services = {c.service.type for c in identity.capabilities if c.HasField("service")}
    assert csi_pb2.PluginCapability.Service.SNAPSHOT_ACCESSIBILITY_CONSTRAINTS in services
    volume = create(driver.client, "snapped", parameters=DIRECTORY).volume_id
    controller = driver.client.controller
    snapshot = controller.CreateSnapshot(
        csi_pb2.CreateSnapshotRequest(name="s1", source_volume_id=volume)
    ).snapshot
    here = csi_pb2.Topology(segments={TOPOLOGY_KEY: NODE})
    assert list(snapshot.accessible_topology) == [here]
    got = controller.GetSnapshot(csi_pb2.GetSnapshotRequest(snapshot_id=snapshot.snapshot_id))
    assert list(got.snapshot.accessible_topology) == [here]
    elsewhere = csi_pb2.CreateSnapshotRequest(name="s2", source_volume_id=volume)
    elsewhere.accessibility_requirements.requisite.add(segments={TOPOLOGY_KEY: "other"})
    assert status_of(lambda: controller.CreateSnapshot(elsewhere)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )


# -- extent arithmetic ---------------------------------------------------------------------
def test_merge_and_subtract() -> None:
    assert extents.merge([(10, 5), (0, 10), (20, 1), (20, 0)]) == [(0, 15), (20, 1)]
    assert extents.subtract([(0, 100)], [(10, 10), (50, 60)]) == [(0, 10), (20, 30)]
    assert extents.subtract([(0, 10)], []) == [(0, 10)]


def test_shared_ranges_need_the_same_physical_place() -> None:
    a = [extents.Extent(0, 1000, 100, 0), extents.Extent(100, 5000, 100, 0)]
    b = [extents.Extent(0, 1000, 50, 0), extents.Extent(50, 9000, 150, 0)]
    assert extents.shared_ranges(a, b) == [(0, 50)]
    untrusted = [extents.Extent(0, 1000, 100, 0x4)]  # delayed allocation: no address yet
    assert extents.shared_ranges(untrusted, untrusted) == []


def test_data_ranges_and_differing_on_a_sparse_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for path in (a, b):
        with path.open("wb") as fh:
            fh.truncate(64 * extents.BLOCK)
            fh.seek(8 * extents.BLOCK)
            fh.write(b"x" * extents.BLOCK)
    with b.open("r+b") as fh:
        fh.seek(20 * extents.BLOCK)
        fh.write(b"y" * extents.BLOCK)
    found = extents.data_ranges(b)
    if not found or found == [(0, 64 * extents.BLOCK)]:
        pytest.skip("this filesystem does not report holes")
    assert (8 * extents.BLOCK, extents.BLOCK) in found
    whole = [(0, 64 * extents.BLOCK)]
    assert extents.differing(a, b, whole) == [(20 * extents.BLOCK, extents.BLOCK)]


def test_one_volume_s_check_reads_the_lines_naming_its_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubelet asks about every mounted volume every minute, on a node whose table holds
    every pod's mounts: one volume's view of the table is the lines naming its staging path
    and targets, whatever the size of the table (counted, not timed)."""
    pods = "/var/lib/kubelet/pods"
    lines = [f"{100 + i} 22 0:{i} / {pods}/p{i}/volumes/v rw - tmpfs t rw" for i in range(1_000)]
    lines.append("2000 22 7:1 /vols/a /stage/vol-1 rw - ext4 /dev/vda1 rw")
    (tmp_path / "mountinfo").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(mount, "MOUNTINFO", tmp_path / "mountinfo")
    spec = VolumeSpec(VolumeKind.DIRECTORY, AccessType.MOUNT, "")
    target = PublishedTarget(read_only=False, exclusive=False)
    record = VolumeRecord(
        "vol-1", "pvc-1", spec, 1 << 20, 0.0, staging_path="/stage/vol-1",
        targets={f"{pods}/p7/volumes/v": target, f"{pods}/p1/volumes/v": target},
    )  # fmt: skip
    seen = sorted(m.mount_point for m in HostView.of(record).mounts)
    assert seen == ["/stage/vol-1", f"{pods}/p1/volumes/v", f"{pods}/p7/volumes/v"]
    unused = VolumeRecord("vol-2", "pvc-2", spec, 1 << 20, 0.0)
    assert HostView.of(unused).mounts == []
