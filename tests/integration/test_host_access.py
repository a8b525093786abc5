"""Host access control (issue 18): nothing the driver keeps on a node is reachable by an
unprivileged host user, while a pod's non-root user with the fsGroup passed as
volume_mount_group can write its volume.

Every kind of volume is made, staged and published through the real driver (in this
process, with kubelet registration and the Docker plugin on) at kubelet-style paths whose
parents are 0755, the worst case. Then ``nobody`` tries to list, read, write and create in
every path under the data root, in every staging path and target, and to connect to every
socket: each attempt must be refused with EACCES or EPERM.
"""

from __future__ import annotations

import errno
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from csi.host import modes
from csi.layout import Layout
from csi.pb import csi_pb2
from csi.state.records import VolumeRecord
from tests.integration.encryption_support import (
    ENCRYPTED,
    KEY,
    KeyedSession,
    cap_with,
)
from tests.integration.test_ephemeral import POD_CONTEXT, inline_id
from tests.support import host_user
from tests.support.docker_plugin import plugin_call
from tests.support.driver import RunningDriver, running_driver
from tests.support.host_user import NOBODY, allowed, attempts, everything_under, traversable
from tests.support.kubelet import BLOCK, DIRECTORY, EXT4, XFS, Flavour

FS_GROUP, POD_UID, POD_OWN_GROUP = 2000, 1000, 1000
FILESYSTEMS = [DIRECTORY, EXT4, XFS, ENCRYPTED]
DRIVER_NAME = "localvol.csi.dev"


@pytest.fixture
def sockets_dir() -> Iterator[Path]:
    """A short, 0755 directory for the registration and Docker plugin sockets (a unix
    socket's path has 108 bytes at most; pytest's tmp paths can be longer)."""
    path = Path(tempfile.mkdtemp(prefix="lv-sock-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def driver(tmp_path: Path, sockets_dir: Path) -> Iterator[RunningDriver]:
    """The whole driver (CSI socket, registration, Docker plugin) on a data root whose
    parents, and the kubelet's paths, are 0755."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # as a DaemonSet's hostPath DirectoryOrCreate makes it
    (sockets_dir / "registry").mkdir(mode=0o755)
    with (
        traversable(tmp_path),
        running_driver(
            data,
            whole=True,
            plugin_registration_dir=sockets_dir / "registry",
            kubelet_registration_path=Path(f"/var/lib/kubelet/plugins/{DRIVER_NAME}/csi.sock"),
            docker_plugin_socket=sockets_dir / "docker" / "localvol.sock",
        ) as running,
    ):
        yield running


def _staged_and_published(session: KeyedSession, name: str, flavour: Flavour) -> Path:
    key = KEY if flavour is ENCRYPTED else None
    volume = session.create_keyed(name, flavour, key)
    return _use(session, volume, flavour, key, pod=name)


def _use(
    session: KeyedSession, volume: str, flavour: Flavour, key: str | None, *, pod: str
) -> Path:
    """Stage and publish ``volume`` as the kubelet does, with the pod's fsGroup."""
    cap = flavour.cap() if flavour.block else cap_with(group=str(FS_GROUP))
    # The kubelet makes a staging path 0750 (its parents stay 0755); a filesystem volume's
    # mount covers it.
    session.kubelet.staging(volume).chmod(0o750)
    session.stage_keyed(volume, key, cap)
    return session.publish_to(volume, pod, cap)


@pytest.fixture
def made(session: KeyedSession, driver: RunningDriver, sockets_dir: Path) -> dict[str, Path]:
    """One of every kind of volume, staged and published; returns the targets by name."""
    kubelet = session.kubelet
    targets = {f.id: _staged_and_published(session, f.id, f) for f in [*FILESYSTEMS, BLOCK]}
    # Snapshots (loop image and directory tree), restores from them, a clone, a group.
    ext4_id = _volume_at(driver, targets["ext4"]).volume_id
    dir_id = _volume_at(driver, targets["directory"]).volume_id
    for flavour, source in ((EXT4, ext4_id), (DIRECTORY, dir_id)):
        snapshot = session.snapshot(f"snap-{flavour.id}", source)
        name = f"restored-{flavour.id}"
        restored = session.create(name, flavour, snapshot_id=snapshot.snapshot_id)
        targets[f"restored-{flavour.id}"] = _use(
            session, restored, flavour, None, pod=f"restored-{flavour.id}"
        )
    clone = session.create("clone-ext4", EXT4, source_volume_id=ext4_id)
    targets["clone-ext4"] = _use(session, clone, EXT4, None, pod="clone-ext4")
    group = csi_pb2.CreateVolumeGroupSnapshotRequest(name="pair", source_volume_ids=[ext4_id])
    reply = session.groups.CreateVolumeGroupSnapshot(group)
    group_id = reply.group_snapshot.group_snapshot_id
    session.later(
        lambda: session.groups.DeleteVolumeGroupSnapshot(
            csi_pb2.DeleteVolumeGroupSnapshotRequest(
                group_snapshot_id=group_id,
                snapshot_ids=[s.snapshot_id for s in reply.group_snapshot.snapshots],
            )
        )
    )
    # An ephemeral inline volume (a loop filesystem, made at publish).
    inline = inline_id("inline-pod")
    target = kubelet.target("inline-pod")
    session.later(lambda: kubelet.unpublish(inline, target))
    kubelet.client.node.NodePublishVolume(
        csi_pb2.NodePublishVolumeRequest(
            volume_id=inline,
            target_path=str(target),
            volume_capability=cap_with(group=str(FS_GROUP)),
            volume_context={**POD_CONTEXT, "size": "32Mi"},
        )
    )
    targets["inline"] = target
    # Docker plugin volumes, mounted (docker/<id>/stage and mount).
    plugin = driver.config.docker_plugin_socket
    assert plugin is not None

    def unmount_and_remove(name: str) -> None:
        assert plugin is not None
        plugin_call(plugin, "/VolumeDriver.Unmount", {"Name": name, "ID": "c1"})
        plugin_call(plugin, "/VolumeDriver.Remove", {"Name": name})

    for name, opts in (("web", {"volumeType": "directory"}), ("db", {"size": "32Mi"})):
        plugin_call(plugin, "/VolumeDriver.Create", {"Name": name, "Opts": opts})
        session.later(lambda n=name: unmount_and_remove(n))
        mounted = plugin_call(plugin, "/VolumeDriver.Mount", {"Name": name, "ID": "c1"})
        assert str(mounted["Mountpoint"]).startswith(str(kubelet.data_dir / "docker"))
    return targets


def _volume_at(driver: RunningDriver, target: Path) -> VolumeRecord:
    """The volume published at ``target``."""
    (record,) = [r for r in driver.driver.volumes.store.all() if str(target) in r.targets]
    return record


def test_nothing_the_driver_keeps_is_reachable_by_host_users(
    made: dict[str, Path], driver: RunningDriver, sockets_dir: Path
) -> None:
    data = driver.data_dir
    layout = Layout(data)
    # Root sees the modes of the table (csi.host.modes).
    for directory in layout.private_dirs():
        assert stat.S_IMODE(directory.stat().st_mode) == modes.PRIVATE_DIR, directory
    for directory in (layout.root / "state", layout.images_dir, layout.snapshots_dir):
        for path in directory.rglob("*"):
            if path.is_file() and not path.parent.name.endswith(".dir"):
                assert stat.S_IMODE(path.stat().st_mode) == modes.PRIVATE_FILE, path
    assert list(layout.snapshots_dir.glob("*.img"))
    assert list(layout.snapshots_dir.glob("*.dir"))
    assert list(layout.plugin_dir.glob("*/mount")), "the Docker volumes are mounted"
    sockets = [
        data / "csi.sock",
        sockets_dir / "registry" / f"{DRIVER_NAME}-reg.sock",
        sockets_dir / "docker" / "localvol.sock",
    ]
    for path in sockets:
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    kubelet_paths = [p for t in made.values() for p in (t, *_staging_of(driver, t))]
    for path in kubelet_paths:
        assert path.parent.stat().st_mode & 0o005 == 0o005, "the worst case: parents open"
    everything = [*everything_under(data), *kubelet_paths, *sockets]
    outcomes = attempts(everything)
    assert {o.op for o in outcomes} == {"list", "read", "write", "create", "mkdir", "connect"}
    assert len(outcomes) > 100, "every path was tried"
    assert allowed(outcomes) == [], "a host user reached what the driver keeps"
    for path in sockets[1:]:  # in 0755 directories: refused by the socket's own mode
        (outcome,) = attempts([path])
        assert outcome.errno == errno.EACCES, outcome


def _staging_of(driver: RunningDriver, target: Path) -> list[Path]:
    """The kubelet's staging path of the volume published at ``target`` (an inline
    volume's private staging path lies under the data root, tried with it)."""
    staging = Path(_volume_at(driver, target).staging_path)
    return [] if driver.data_dir in staging.parents else [staging]


ROOTS = ["directory", "ext4", "xfs", "encrypted", "restored-ext4", "restored-directory"]


@pytest.mark.parametrize("name", [*ROOTS, "clone-ext4", "inline"])
def test_the_fs_group_writes_and_no_one_else(made: dict[str, Path], name: str) -> None:
    target = made[name]
    st = target.stat()
    assert st.st_gid == FS_GROUP, st.st_gid
    assert stat.S_IMODE(st.st_mode) == modes.VOLUME_ROOT, oct(st.st_mode)  # no "other"
    outsider = host_user.tried([("create", str(target))], uid=POD_UID, gids=[POD_OWN_GROUP])
    assert [o.errno for o in outsider] == [errno.EACCES], "a uid without the fsGroup wrote"
    member = host_user.tried([("create", str(target))], uid=POD_UID, gids=[FS_GROUP])
    assert [o.errno for o in member] == [0], "the pod's user with its fsGroup cannot write"
    written = target / host_user.CREATED
    assert written.stat().st_gid == FS_GROUP, "setgid root: new files keep the group"
    assert written.read_bytes() == b"written\n"


def test_raw_block_device_is_not_for_other_users(made: dict[str, Path]) -> None:
    target = made["block"]
    st = target.stat()
    assert stat.S_ISBLK(st.st_mode)
    assert st.st_mode & modes.OTHER_BITS == 0, oct(st.st_mode)  # udev: root:disk 0660
    outcomes = host_user.attempts([target], uid=NOBODY, gids=[NOBODY])
    assert [o.errno for o in outcomes] == [errno.EACCES, errno.EACCES]
