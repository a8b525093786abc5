"""A pod controls what is inside its volume, symlinks included: the driver's walks over a
volume (fsGroup, directory snapshots and clones) must never act through one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from csi.host.copy import copy_tree, give_tree_to_group

SECRET = b"host secret outside every volume\n"


def host_file(tmp_path: Path) -> Path:
    secret = tmp_path / "host" / "secret"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    os.chown(secret, 0, 0)
    return secret


def hostile_volume(tmp_path: Path, secret: Path) -> Path:
    volume = tmp_path / "volume"
    (volume / "sub").mkdir(parents=True)
    (volume / "sub" / "own.txt").write_bytes(b"mine\n")
    (volume / "link-to-file").symlink_to(secret)
    (volume / "sub" / "link-to-dir").symlink_to(secret.parent)
    return volume


def test_fs_group_never_changes_what_a_link_points_at(tmp_path: Path) -> None:
    secret = host_file(tmp_path)
    volume = hostile_volume(tmp_path, secret)
    give_tree_to_group(volume, 4242)
    st = os.stat(secret)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o600, 0), "a host file was changed"
    assert os.stat(secret.parent).st_gid == 0
    own = os.stat(volume / "sub" / "own.txt")
    assert own.st_gid == 4242
    assert own.st_mode & 0o060 == 0o060
    assert os.stat(volume / "sub").st_mode & 0o2000


def test_tree_copy_keeps_links_as_links(tmp_path: Path) -> None:
    secret = host_file(tmp_path)
    volume = hostile_volume(tmp_path, secret)
    copy = tmp_path / "snapshot"
    copy_tree(volume, copy)
    assert (copy / "sub" / "own.txt").read_bytes() == b"mine\n"
    assert (copy / "link-to-file").is_symlink()
    assert os.readlink(copy / "link-to-file") == str(secret)
    assert (copy / "sub" / "link-to-dir").is_symlink()
    for path in copy.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert SECRET not in path.read_bytes(), f"{path} holds the host file's content"


def test_tree_copy_skips_device_nodes_and_fifos(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    os.mkfifo(volume / "pipe")
    (volume / "plain").write_bytes(b"x")
    copy = tmp_path / "copy"
    copy_tree(volume, copy)
    assert sorted(p.name for p in copy.iterdir()) == ["plain"]


def test_bind_goes_onto_what_the_path_named_not_through_a_symlink(tmp_path: Path) -> None:
    """A target path that became a symlink after validation is refused, never followed."""
    import pytest

    from csi.host import mount
    from csi.host.errors import MountPointUnusable
    from csi.host.mountpoints import bind_onto

    source, elsewhere = tmp_path / "source", tmp_path / "host-dir"
    source.mkdir()
    elsewhere.mkdir()
    target = tmp_path / "target"
    target.symlink_to(elsewhere)
    with pytest.raises(MountPointUnusable):
        bind_onto(source, target, directory=True, read_only=False, flags=[])
    assert not mount.is_mount_point(elsewhere)
    plain = tmp_path / "plain"
    plain.mkdir()
    bind_onto(source, plain, directory=True, read_only=False, flags=[])
    try:
        assert mount.is_mount_point(plain)
    finally:
        mount.unmount(plain)
