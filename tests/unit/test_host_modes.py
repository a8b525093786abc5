"""The modes of what the driver keeps (csi.host.modes), and where they are applied without
root: the data root's directories, the narrowing of an older data root, sockets."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from csi.endpoints import bound_privately
from csi.host import files, modes
from csi.layout import Layout
from csi.tighten import tighten


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def test_the_table_gives_other_users_nothing() -> None:
    for mode in (modes.PRIVATE_DIR, modes.PRIVATE_FILE, modes.SOCKET, modes.VOLUME_ROOT):
        assert mode & modes.OTHER_BITS == 0, oct(mode)
    assert modes.PRIVATE_DIR & modes.GROUP_OTHER_BITS == 0
    assert modes.SOCKET == 0o777 & ~modes.SOCKET_UMASK & ~0o111  # a socket has no x bits
    assert modes.VOLUME_ROOT & modes.GROUP_DIR_BITS == modes.GROUP_DIR_BITS  # fsGroup: rwx, setgid


def test_group_shared_and_restricted() -> None:
    assert modes.group_shared(0o755, directory=True) == 0o2775
    assert modes.group_shared(0o600, directory=False) == 0o660
    assert modes.without_other(0o2777) == 0o2770
    assert modes.restricted(stat.S_IFDIR | 0o2777, modes.NO_OTHER) == 0o2770
    assert modes.restricted(0o4755, modes.PRIVATE_DIR) == 0o700


def test_ensure_makes_every_directory_private_whatever_the_umask(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data")
    with umask(0):
        layout.ensure()
    for directory in layout.private_dirs():
        assert mode_of(directory) == modes.PRIVATE_DIR, directory
    for directory in (layout.ephemeral_dir, layout.setup_dir, layout.plugin_dir):
        assert directory in layout.private_dirs()


def test_ensure_narrows_an_older_data_root(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    layout.root.chmod(0o755)
    layout.volumes_dir.chmod(0o711)  # what the older driver set
    layout.state_dir.chmod(0o1777)
    layout.ensure()
    assert {mode_of(d) for d in layout.private_dirs()} == {modes.PRIVATE_DIR}


def test_make_dir_makes_missing_parents_private(tmp_path: Path) -> None:
    with umask(0):
        files.make_dir(tmp_path / "a" / "b" / "c", parents=True)
    assert mode_of(tmp_path / "a") == mode_of(tmp_path / "a" / "b") == modes.PRIVATE_DIR


def test_restrict_clears_bits_and_leaves_links(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    target.chmod(0o666)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert files.restrict(link, modes.PRIVATE_FILE) is False
    assert mode_of(target) == 0o666, "a link is never followed"
    assert files.restrict(target, modes.PRIVATE_FILE) is True
    assert mode_of(target) == 0o600
    assert files.restrict(target, modes.PRIVATE_FILE) is False, "nothing to narrow twice"
    assert files.restrict(tmp_path / "gone", modes.PRIVATE_FILE) is False


def test_tighten_narrows_the_drivers_files_not_the_volumes(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    record = layout.record_path("vol-1")
    image = layout.image_path("vol-1")
    snapshot_image = layout.snapshot_path("snap-1", ".img")
    for path in (record, image, snapshot_image, layout.node_use_dir / "vol-1.json"):
        path.write_text("{}")
        path.chmod(0o644)
    quarantined = layout.state_dir / "sub"
    quarantined.mkdir(mode=0o755)
    volume = layout.directory_path("vol-2")
    volume.mkdir()
    volume.chmod(0o777)  # an older default root: a running pod may depend on it
    (volume / "data.txt").write_text("the pod's")
    (volume / "data.txt").chmod(0o666)
    tree = layout.snapshot_path("snap-2", ".dir")
    tree.mkdir()
    tree.chmod(0o777)
    plugin_volume = layout.plugin_dir / "vol-3"
    (plugin_volume / "mount").mkdir(parents=True)
    plugin_volume.chmod(0o755)
    (plugin_volume / "mount").chmod(0o777)  # a mount point: its mode is the mounted root's

    changed = tighten(layout)

    assert set(changed) == {
        record,
        image,
        snapshot_image,
        layout.node_use_dir / "vol-1.json",
        quarantined,
        plugin_volume,
    }
    assert {mode_of(p) for p in (record, image, snapshot_image)} == {modes.PRIVATE_FILE}
    assert mode_of(quarantined) == mode_of(plugin_volume) == modes.PRIVATE_DIR
    assert mode_of(volume) == 0o777
    assert mode_of(volume / "data.txt") == 0o666
    assert mode_of(tree) == 0o777
    assert mode_of(plugin_volume / "mount") == 0o777
    assert tighten(layout) == []


@pytest.mark.parametrize("exists", [True, False])
def test_a_socket_is_born_private(tmp_path: Path, exists: bool) -> None:
    directory = tmp_path / "sockets"
    if exists:
        directory.mkdir(mode=0o755)
    path = directory / "driver.sock"
    seen: list[int] = []
    with umask(0), socket.socket(socket.AF_UNIX) as unix:
        with bound_privately(path):
            unix.bind(str(path))
            seen.append(mode_of(path))
        assert os.umask(0) == 0, "the umask is put back"
    assert seen == [modes.SOCKET], "no instant wider than 0600"
    assert mode_of(path) == modes.SOCKET
    # A missing directory is made private; an existing one (maybe shared) is left as it is.
    assert mode_of(directory) == (0o755 if exists else modes.PRIVATE_DIR)


def test_a_stale_socket_is_replaced_and_the_umask_restored_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "driver.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))
    with umask(0o022):
        with pytest.raises(OSError, match="bind failed"), bound_privately(path):
            raise OSError("bind failed")
        assert os.umask(0o022) == 0o022
    assert not path.exists(), "the stale socket was removed before the bind"
