"""Directory volumes held to their size, proved with real writes in a kernel that has
project quotas (run inside a guest by tests/guest/test_quotas.py; not collected on the host).

Each case runs on every data root the guest mounted (xfs and ext4, both ``prjquota``), with
the driver in this process. A pod's writer is a process without CAP_SYS_RESOURCE (ext4 lets
that capability past a hard limit; pods do not get it).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from csi.host import quota
from csi.host.kernel import FAULT_ENV
from csi.pb import csi_pb2
from csi.volumes.quotas import FIRST_PROJECT, LAST_PROJECT
from tests.support.docker_plugin import plugin_request
from tests.support.driver import DriverProcess, RunningDriver, crash_during, running_driver
from tests.support.kubelet import MIB, Kubelet, mount_capability

ROOTS = dict(
    item.split("=", 1) for item in os.environ.get("LOCALVOL_GUEST_ROOTS", "").split(",") if item
)
FILESYSTEMS = ("xfs", "ext4")
DIRECTORY = {"volumeType": "directory"}
# Writes chunk by chunk until the filesystem refuses; prints bytes written and the errno.
WRITER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
chunk, written, code = b"x" * (1 << 20), 0, 0
try:
    while written < int(sys.argv[2]):
        written += os.write(fd, chunk)
    os.fsync(fd)
except OSError as exc:
    code = exc.errno
print(written, code)
"""


# Makes empty files until the filesystem refuses (or argv[2] of them); prints the count.
FILE_MAKER = """
import os, sys
made, code = 0, 0
try:
    while made < int(sys.argv[2]):
        os.close(os.open(os.path.join(sys.argv[1], f"f{made}"), os.O_CREAT | os.O_WRONLY))
        made += 1
except OSError as exc:
    code = exc.errno
print(made, code)
"""


@pytest.fixture(params=FILESYSTEMS)
def data_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A fresh data root on the guest's filesystem of that type; afterwards the test's
    mounts go and the root with them, so the disk's room is there for the next test."""
    root = ROOTS.get(request.param)
    assert root, f"the guest mounted no {request.param} (LOCALVOL_GUEST_ROOTS={ROOTS})"
    path = Path(root) / f"data-{uuid.uuid4().hex[:8]}"
    yield path
    for mounted in reversed(Path("/proc/self/mounts").read_text().splitlines()):
        point = mounted.split()[1]
        if point.startswith((f"{tmp_path}/", f"{path}/")):
            subprocess.run(["umount", "-l", point], check=False)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def node(data_dir: Path, tmp_path: Path) -> Iterator[tuple[RunningDriver, Kubelet]]:
    with running_driver(data_dir) as running:
        yield running, Kubelet(running.client, tmp_path / "kubelet", data_dir)


def as_pod(script: str, *args: object) -> tuple[int, int]:
    """Run ``script`` as a pod's process would (no CAP_SYS_RESOURCE); it prints how much it
    did and the errno that stopped it (0: none)."""
    argv = ["setpriv", "--inh-caps=-sys_resource", "--bounding-set=-sys_resource"]
    argv += [sys.executable, "-c", script, *map(str, args)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def write_as_pod(path: Path, limit: int = 1 << 40) -> tuple[int, int]:
    """(bytes written, errno that stopped it or 0)."""
    return as_pod(WRITER, path, limit)


def in_use(kubelet: Kubelet, name: str, size: int) -> tuple[str, Path]:
    """A directory volume of ``size``, staged and published: its ID and the pod's path."""
    volume = kubelet.create(name, DIRECTORY, size)
    staging, target = kubelet.staging(name), kubelet.target(name)
    kubelet.stage(volume, staging)
    kubelet.publish(volume, staging, target)
    return volume, target


def copy_of(
    running: RunningDriver, name: str, size: int, source: csi_pb2.VolumeContentSource
) -> csi_pb2.CreateVolumeResponse:
    """CreateVolume of a directory volume of ``size`` from ``source``."""
    return running.client.controller.CreateVolume(
        csi_pb2.CreateVolumeRequest(
            name=name,
            parameters=DIRECTORY,
            capacity_range=csi_pb2.CapacityRange(required_bytes=size),
            volume_capabilities=[mount_capability()],
            volume_content_source=source,
        )
    )


def refused(code: int) -> bool:
    return code in (errno.ENOSPC, errno.EDQUOT)


def test_quotas_are_on(data_dir: Path) -> None:
    data_dir.mkdir()
    assert quota.support(data_dir).enforced


def test_a_pod_cannot_write_past_its_volume(node: tuple[RunningDriver, Kubelet]) -> None:
    _, kubelet = node
    _, target = in_use(kubelet, "held", 64 * MIB)
    _, neighbour = in_use(kubelet, "neighbour", 64 * MIB)
    written, code = write_as_pod(target / "fill")
    assert refused(code), os.strerror(code)
    assert 63 * MIB <= written <= 64 * MIB
    # Nothing else on the node is affected: the neighbour volume takes its writes.
    written, code = write_as_pod(neighbour / "data", 8 * MIB)
    assert (written, code) == (8 * MIB, 0)


def test_stats_and_df_show_the_volume_own_size(node: tuple[RunningDriver, Kubelet]) -> None:
    _, kubelet = node
    volume, target = in_use(kubelet, "seen", 64 * MIB)
    write_as_pod(target / "data", 16 * MIB)
    st = os.statvfs(target)  # what df in the pod reads
    assert st.f_blocks * st.f_frsize == 64 * MIB
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    assert 16 * MIB <= used < 17 * MIB
    (bytes_usage,) = (u for u in kubelet.stats(volume, target).usage if u.unit == u.BYTES)
    assert bytes_usage.total == 64 * MIB
    assert 16 * MIB <= bytes_usage.used < 17 * MIB
    assert bytes_usage.available == bytes_usage.total - bytes_usage.used


def test_expansion_raises_the_limit_online(node: tuple[RunningDriver, Kubelet]) -> None:
    running, kubelet = node
    volume, target = in_use(kubelet, "grown", 64 * MIB)
    _written, code = write_as_pod(target / "first")
    assert refused(code)
    running.client.controller.ControllerExpandVolume(
        csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume, capacity_range=csi_pb2.CapacityRange(required_bytes=96 * MIB)
        )
    )
    more, code = write_as_pod(target / "second")
    assert refused(code)
    assert 31 * MIB <= more <= 32 * MIB
    assert os.statvfs(target).f_blocks * os.statvfs(target).f_frsize == 96 * MIB


def test_a_clone_is_charged_to_its_own_project(node: tuple[RunningDriver, Kubelet]) -> None:
    running, kubelet = node
    source, target = in_use(kubelet, "source", 64 * MIB)
    write_as_pod(target / "data", 48 * MIB)
    source_of = csi_pb2.VolumeContentSource(
        volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=source)
    )
    clone = copy_of(running, "clone", 64 * MIB, source_of).volume.volume_id
    staging, clone_target = kubelet.staging("clone"), kubelet.target("clone")
    kubelet.stage(clone, staging)
    kubelet.publish(clone, staging, clone_target)
    assert (clone_target / "data").stat().st_size == 48 * MIB
    written, code = write_as_pod(clone_target / "more")
    assert refused(code)
    assert 15 * MIB <= written <= 16 * MIB


def test_the_driver_copy_is_held_to_the_new_size(data_dir: Path, tmp_path: Path) -> None:
    """A source made unheld (quotas off) holding more than a restore may: the copy, by the
    driver (root, CAP_SYS_RESOURCE), is refused at the new volume's limit on ext4 too, and
    leaves nothing behind."""
    with running_driver(data_dir, directory_quota="off") as running:
        kubelet = Kubelet(running.client, tmp_path / "kubelet", data_dir)
        source, target = in_use(kubelet, "unheld", 32 * MIB)
        written, code = write_as_pod(target / "data", 48 * MIB)
        assert (written, code) == (48 * MIB, 0)  # not held: past its size
        snapshot = running.client.controller.CreateSnapshot(
            csi_pb2.CreateSnapshotRequest(name="snap", source_volume_id=source)
        ).snapshot.snapshot_id
    with running_driver(data_dir) as running:
        kubelet = Kubelet(running.client, tmp_path / "kubelet", data_dir)
        before = sorted(p.name for p in (data_dir / "volumes").iterdir())
        with pytest.raises(grpc.RpcError) as raised:
            copy_of(
                running,
                "restored",
                32 * MIB,
                csi_pb2.VolumeContentSource(
                    snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snapshot)
                ),
            )
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, raised.value.details()
        assert sorted(p.name for p in (data_dir / "volumes").iterdir()) == before


def test_a_deleted_volume_gives_its_project_back(node: tuple[RunningDriver, Kubelet]) -> None:
    running, kubelet = node
    volume = kubelet.create("gone", DIRECTORY, 16 * MIB)
    record = running.driver.volumes.store.get(volume)
    assert record is not None
    assert record.project_id is not None
    project = record.project_id
    kubelet.delete(volume)
    left = quota.charge(running.data_dir, project)
    assert (left.byte_limit, left.inode_limit) == (0, 0)


def test_ids_others_use_are_never_taken(data_dir: Path, tmp_path: Path) -> None:
    """The ID the driver would take next, charged by someone else (a directory beside the
    data root, a file in it, no limit): the driver's new volume gets another one."""
    data_dir.mkdir()
    theirs = data_dir.parent / f"theirs-{data_dir.name}"
    theirs.mkdir()
    taken = next(p for p in range(FIRST_PROJECT, LAST_PROJECT) if quota.charge(data_dir, p).idle)
    quota.assign(theirs, taken)
    (theirs / "file").write_bytes(b"x" * 4096)
    os.sync()
    assert not quota.charge(data_dir, taken).idle
    with running_driver(data_dir) as running:
        kubelet = Kubelet(running.client, tmp_path / "kubelet", data_dir)
        volume = kubelet.create("mine", DIRECTORY, 16 * MIB)
        record = running.driver.volumes.store.get(volume)
        assert record is not None
        assert record.project_id is not None
        assert record.project_id != taken


# -- a failure at each quota step, rolled back -------------------------------------------------
def _code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code()


@pytest.mark.parametrize("step", ["fsxattr:set", "quota:limit"])
def test_a_failed_hold_leaves_no_volume(
    node: tuple[RunningDriver, Kubelet], monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    running, kubelet = node
    monkeypatch.setenv(FAULT_ENV, step)
    assert _code(lambda: kubelet.create("failed", DIRECTORY, 16 * MIB)) == grpc.StatusCode.INTERNAL
    assert list((running.data_dir / "volumes").iterdir()) == []
    assert running.driver.volumes.store.all() == []
    monkeypatch.delenv(FAULT_ENV)
    volume = kubelet.create("failed", DIRECTORY, 16 * MIB)  # the retry makes it whole
    record = running.driver.volumes.store.get(volume)
    assert record is not None
    assert record.project_id is not None
    assert quota.charge(running.data_dir, record.project_id).byte_limit == 16 * MIB


def test_a_failed_grow_keeps_the_old_size(
    node: tuple[RunningDriver, Kubelet], monkeypatch: pytest.MonkeyPatch
) -> None:
    running, kubelet = node
    volume = kubelet.create("grow", DIRECTORY, 16 * MIB)
    request = csi_pb2.ControllerExpandVolumeRequest(
        volume_id=volume, capacity_range=csi_pb2.CapacityRange(required_bytes=32 * MIB)
    )
    monkeypatch.setenv(FAULT_ENV, "quota:grow")
    expand = running.client.controller.ControllerExpandVolume
    assert _code(lambda: expand(request)) == grpc.StatusCode.INTERNAL
    record = running.driver.volumes.store.get(volume)
    assert record is not None
    assert record.capacity_bytes == 16 * MIB
    assert record.project_id is not None
    assert quota.charge(running.data_dir, record.project_id).byte_limit == 16 * MIB
    monkeypatch.delenv(FAULT_ENV)
    assert expand(request).capacity_bytes == 32 * MIB
    assert quota.charge(running.data_dir, record.project_id).byte_limit == 32 * MIB


def test_a_failed_lift_keeps_the_record_until_the_retry(
    node: tuple[RunningDriver, Kubelet], monkeypatch: pytest.MonkeyPatch
) -> None:
    running, kubelet = node
    volume = kubelet.create("lift", DIRECTORY, 16 * MIB)
    record = running.driver.volumes.store.get(volume)
    assert record is not None
    assert record.project_id is not None
    monkeypatch.setenv(FAULT_ENV, "quota:lift")
    assert _code(lambda: kubelet.delete(volume)) == grpc.StatusCode.INTERNAL
    assert running.driver.volumes.store.get(volume) is not None  # the ID stays named
    monkeypatch.delenv(FAULT_ENV)
    kubelet.delete(volume)
    assert running.driver.volumes.store.get(volume) is None
    left = quota.charge(running.data_dir, record.project_id)
    assert (left.byte_limit, left.inode_limit) == (0, 0)


def test_a_plugin_volume_is_held_too(data_dir: Path, tmp_path: Path) -> None:
    """The Docker and Podman plugin's directory volume with ``size``: a container's writer
    stops at it."""
    plugin = tmp_path / "plugin.sock"
    with running_driver(data_dir, whole=True, docker_plugin_socket=plugin):
        opts = {"volumeType": "directory", "size": "32Mi"}
        status, reply = plugin_request(
            plugin, "/VolumeDriver.Create", {"Name": "web", "Opts": opts}
        )
        assert status == 200, reply
        mount = {"Name": "web", "ID": "container-1"}
        status, reply = plugin_request(plugin, "/VolumeDriver.Mount", mount)
        assert status == 200, reply
        written, code = write_as_pod(Path(str(reply["Mountpoint"])) / "data")
        assert refused(code), os.strerror(code)
        assert 31 * MIB <= written <= 32 * MIB
        assert plugin_request(plugin, "/VolumeDriver.Unmount", mount)[0] == 200
        assert plugin_request(plugin, "/VolumeDriver.Remove", {"Name": "web"})[0] == 200


def test_node_expansion_raises_the_limit_online(node: tuple[RunningDriver, Kubelet]) -> None:
    """Where the controller does not expand (a per-node deployment), NodeExpandVolume does."""
    running, kubelet = node
    volume, target = in_use(kubelet, "node-grown", 32 * MIB)
    _, code = write_as_pod(target / "first")
    assert refused(code)
    reply = running.client.node.NodeExpandVolume(
        csi_pb2.NodeExpandVolumeRequest(
            volume_id=volume,
            volume_path=str(target),
            capacity_range=csi_pb2.CapacityRange(required_bytes=48 * MIB),
        )
    )
    assert reply.capacity_bytes == 48 * MIB
    more, code = write_as_pod(target / "second")
    assert refused(code)
    assert 15 * MIB <= more <= 16 * MIB


def test_a_volume_cannot_use_up_the_inode_table(node: tuple[RunningDriver, Kubelet]) -> None:
    """Its share of inodes: an ext4 of its own size would have as many, at the data root's
    ratio; empty files past it are refused."""
    running, kubelet = node
    volume, target = in_use(kubelet, "many-files", 16 * MIB)
    record = running.driver.volumes.store.get(volume)
    assert record is not None
    assert record.project_id is not None
    limit = quota.charge(running.data_dir, record.project_id).inode_limit
    usage = os.statvfs(running.data_dir)
    assert limit == max(1024, -(-usage.f_files * 16 * MIB // (usage.f_blocks * usage.f_frsize)))
    made, code = as_pod(FILE_MAKER, target, str(limit + 8))
    assert refused(code), (made, limit)
    assert limit - 2 <= made <= limit  # the volume's root directory is one of them


def test_a_crash_while_a_held_volume_is_made_gives_its_id_back(
    data_dir: Path, tmp_path: Path
) -> None:
    """Killed after the directory joined its project: the restart undoes the volume, lifts
    the limit and frees the ID for the next volume."""
    driver = DriverProcess(data_dir, tmp_path / "logs", tmp_path / "kubelet")
    try:
        driver.start(fault="create:renamed")
        crash_during(driver, lambda: driver.kubelet.create("killed", DIRECTORY, 16 * MIB))
        record = next(iter((data_dir / "state" / "volumes").glob("*.json")))
        project = int(json.loads(record.read_text())["project_id"])
        assert quota.charge(data_dir, project).byte_limit == 16 * MIB
        driver.start()  # reconciled: the volume never answered is undone
        assert list((data_dir / "volumes").iterdir()) == []
        assert quota.charge(data_dir, project).idle
        volume = driver.kubelet.create("next", DIRECTORY, 16 * MIB)
        again = json.loads(driver.kubelet.record(volume).read_text())["project_id"]
        assert again == project
        assert driver.stop() == 0
    finally:
        driver.kill()
