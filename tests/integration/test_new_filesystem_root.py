"""A new filesystem's root gets its mode from the formatting, without being mounted.

A new loop volume's root is modes.VOLUME_ROOT or its class's mode, not mkfs's 0755. The
mode is written while the filesystem is still an image file (debugfs for ext4, mkfs.xfs's
prototype file for xfs): the volume is made with no mount at all, except an xfs root with
the sticky bit (the prototype file cannot say it), which is mounted and changed as before.
The mode is then checked where the pod sees it: at the volume's stage.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from csi.config import MIB
from csi.host import errors, mkfs, modes, mount
from csi.host.run import run
from csi.layout import Layout
from csi.pb import csi_pb2
from csi.state.records import AccessType, VolumeKind, VolumeSpec
from csi.state.store import StateStore
from csi.validation import Capability
from csi.volumes.manager import Volumes

WRITER = csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
CASES = [
    ("ext4", None),
    ("ext4", 0o750),
    ("ext4", 0o4700),
    ("ext4", 0o1777),
    ("xfs", None),
    ("xfs", 0o750),
    ("xfs", 0o1777),
]


IDS = [f"{f}-{'default' if m is None else f'{m:04o}'}" for f, m in CASES]


@pytest.mark.parametrize(("fs_type", "mode"), CASES, ids=IDS)
def test_a_new_filesystems_root_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fs_type: str, mode: int | None
) -> None:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    store = StateStore(layout)
    store.load()
    volumes = Volumes(layout, store)
    spec = VolumeSpec(VolumeKind.LOOP, AccessType.MOUNT, fs_type, mode=mode)
    wanted = modes.VOLUME_ROOT if mode is None else mode
    mounted: list[str] = []

    def counting(real: Callable[..., None]) -> Callable[..., None]:
        def call(device: str, target: Path | str, *args: Any, **kwargs: Any) -> None:
            mounted.append(str(target))
            real(device, target, *args, **kwargs)

        return call

    with monkeypatch.context() as patch:
        patch.setattr(mount, "mount", counting(mount.mount))
        record = volumes.create(f"pvc-{fs_type}", spec, mkfs.MIN_FS_SIZE[fs_type])
    assert len(mounted) == (0 if mkfs.sets_root_mode(fs_type, wanted) else 1), mounted
    staging = tmp_path / "staging"
    staging.mkdir()
    cap = Capability(AccessType.MOUNT, WRITER, fs_type, (), "")
    try:
        volumes.stage(record, staging, cap)
        assert stat.S_IMODE(staging.stat().st_mode) == wanted, oct(staging.stat().st_mode)
        assert (staging.stat().st_uid, staging.stat().st_gid) == (0, 0)
        volumes.unstage(store.require_ready(record.volume_id), staging)
    finally:
        mount.unmount(staging)
    volumes.delete(store.require_ready(record.volume_id))


def test_an_xfs_root_with_the_sticky_bit_is_not_the_formattings(tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.write_bytes(b"")
    assert not mkfs.sets_root_mode("xfs", 0o1777)
    with pytest.raises(ValueError, match="1777"):
        mkfs.make_filesystem(image, "xfs", known_blank=True, root_mode=0o1777)
    assert image.stat().st_size == 0  # refused before anything ran


def test_debugfs_complaints_are_failures_though_it_exits_0(tmp_path: Path) -> None:
    """debugfs exits 0 whatever becomes of its request: its complaints on stderr are what
    says it failed (here: the image holds no ext4 filesystem)."""
    image = tmp_path / "image"
    with open(image, "wb") as out:
        out.truncate(16 * MIB)
    proc = run(["debugfs", "-w", "-R", "stat /", str(image)])
    assert proc.returncode == 0
    assert proc.stderr.strip()
    with pytest.raises(errors.CommandFailed, match="debugfs could not set the root's mode"):
        mkfs._set_ext4_root_mode(image, 0o2770)
