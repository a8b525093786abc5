"""csi.validation: checks on untrusted request fields at the service edge."""

from __future__ import annotations

from pathlib import Path

import pytest

from csi.errors import InvalidArgument
from csi.layout import Layout
from csi.pb import csi_pb2
from csi.state.records import AccessType
from csi.validation import (
    MAX_PATH_BYTES,
    check_host_path,
    check_mount_flags,
    check_name,
    parse_capabilities,
    parse_capability,
    required_capability,
    unsupported_reason,
)
from tests.support.kubelet import block_capability, mount_capability

Mode = csi_pb2.VolumeCapability.AccessMode.Mode
SUPPORTED = [
    Mode.SINGLE_NODE_WRITER,
    Mode.SINGLE_NODE_READER_ONLY,
    Mode.SINGLE_NODE_SINGLE_WRITER,
    Mode.SINGLE_NODE_MULTI_WRITER,
]
MULTI_NODE = [
    Mode.MULTI_NODE_READER_ONLY,
    Mode.MULTI_NODE_SINGLE_WRITER,
    Mode.MULTI_NODE_MULTI_WRITER,
]


# -- names -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pvc-1", "a", "x" * 128, "é" * 64, "名" * 42, "a b", "a.b"])
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 129,
        "é" * 65,  # 130 bytes in UTF-8, 65 characters
        "名" * 43,  # 129 bytes
        "a/b",
        "a\\b",
        "a\x00b",
        "a\nb",
        "a\tb",
        "a\x7fb",
        "evil\u202etxt",  # RIGHT-TO-LEFT OVERRIDE (format)
        "zero\u200bwidth",
        ".",
        "..",
    ],
)
def test_check_name_rejects(name: str) -> None:
    with pytest.raises(InvalidArgument):
        check_name(name)


# -- host paths ------------------------------------------------------------------------
@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    result = Layout(tmp_path / "data")
    result.ensure()
    return result


def test_check_host_path_accepts_plain_paths(tmp_path: Path, layout: Layout) -> None:
    existing = tmp_path / "target"
    existing.mkdir()
    assert check_host_path(str(existing), "target_path", layout) == existing
    missing = tmp_path / "not-yet"
    assert check_host_path(str(missing) + "/", "target_path", layout) == missing
    assert check_host_path(f"{tmp_path}//./x", "target_path", layout) == tmp_path / "x"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("", "required"),
        ("relative/path", "absolute"),
        ("/a/../b", "'..'"),
        ("/a/..", "'..'"),
        ("/a\x00b", "NUL"),
        ("/" + "a" * MAX_PATH_BYTES, "at most"),
    ],
)
def test_check_host_path_rejects(layout: Layout, raw: str, needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle) as info:
        check_host_path(raw, "target_path", layout)
    assert "target_path" in info.value.message


def test_check_host_path_refuses_symlink(tmp_path: Path, layout: Layout) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        check_host_path(str(link), "staging_target_path", layout)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(InvalidArgument, match="symbolic link"):
        check_host_path(str(dangling), "staging_target_path", layout)


def test_check_host_path_refuses_data_root(tmp_path: Path, layout: Layout) -> None:
    for inside in (layout.root, layout.volumes_dir, layout.volumes_dir / "vol-x"):
        with pytest.raises(InvalidArgument, match="outside"):
            check_host_path(str(inside), "target_path", layout)
    # reached through a symlinked parent directory
    (tmp_path / "alias").symlink_to(layout.root)
    with pytest.raises(InvalidArgument, match="outside"):
        check_host_path(str(tmp_path / "alias" / "volumes"), "target_path", layout)


def test_check_host_path_component_too_long(tmp_path: Path, layout: Layout) -> None:
    with pytest.raises(InvalidArgument):
        check_host_path(str(tmp_path / ("n" * 300)), "target_path", layout)


# -- mount flags -----------------------------------------------------------------------
def test_check_mount_flags_accepts() -> None:
    flags = ["noatime", "nosuid", 'context="system_u:object_r:x:s0:c1,c2"']
    assert check_mount_flags(flags) == flags
    assert check_mount_flags([]) == []


@pytest.mark.parametrize("flag", ["", "ro,nosuid", "a\x00", "a\nb", "o=" + "x" * 1100])
def test_check_mount_flags_rejects(flag: str) -> None:
    with pytest.raises(InvalidArgument):
        check_mount_flags(["noatime", flag])


# -- capabilities ----------------------------------------------------------------------
def test_missing_access_type() -> None:
    cap = csi_pb2.VolumeCapability(
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=Mode.SINGLE_NODE_WRITER)
    )
    assert unsupported_reason(cap) == "access_type (block or mount) is required"
    with pytest.raises(InvalidArgument, match="access_type"):
        parse_capability(cap)


@pytest.mark.parametrize(
    "cap", [mount_capability(mode=Mode.UNKNOWN), block_capability(Mode.UNKNOWN)]
)
def test_unknown_mode(cap: csi_pb2.VolumeCapability) -> None:
    assert unsupported_reason(cap) == "access_mode is required"
    with pytest.raises(InvalidArgument, match="access_mode"):
        parse_capability(cap)


def test_missing_access_mode() -> None:
    cap = csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume())
    assert unsupported_reason(cap) == "access_mode is required"


@pytest.mark.parametrize("mode", MULTI_NODE)
def test_multi_node_modes_refused(mode: int) -> None:
    for cap in (mount_capability(mode=mode), block_capability(mode)):
        reason = unsupported_reason(cap)
        assert reason is not None
        assert Mode.Name(mode) in reason
        with pytest.raises(InvalidArgument):
            parse_capability(cap)


@pytest.mark.parametrize("mode", SUPPORTED)
def test_supported_modes(mode: int) -> None:
    assert unsupported_reason(mount_capability(mode=mode)) is None
    parsed = parse_capability(mount_capability("xfs", mode, ("noatime",)))
    assert parsed.access_type is AccessType.MOUNT
    assert parsed.fs_type == "xfs"
    assert parsed.mount_flags == ("noatime",)
    assert parsed.read_only == (mode == Mode.SINGLE_NODE_READER_ONLY)
    assert parsed.exclusive == (mode == Mode.SINGLE_NODE_SINGLE_WRITER)


def test_block_capability() -> None:
    parsed = parse_capability(block_capability())
    assert parsed.access_type is AccessType.BLOCK
    assert parsed.fs_type == ""
    assert parsed.mount_flags == ()


@pytest.mark.parametrize("fs_type", ["e\x00xt4", "x" * 33])
def test_bad_fs_type(fs_type: str) -> None:
    with pytest.raises(InvalidArgument, match="fs_type"):
        parse_capability(mount_capability(fs_type))


def test_mount_flags_checked_in_capability() -> None:
    with pytest.raises(InvalidArgument, match="mount_flags"):
        parse_capability(mount_capability(flags=("ro,exec",)))


def test_parse_capabilities_requires_one() -> None:
    with pytest.raises(InvalidArgument, match="volume_capabilities"):
        parse_capabilities([])
    assert len(parse_capabilities([mount_capability(), mount_capability()])) == 2


def test_required_capability() -> None:
    with pytest.raises(InvalidArgument, match="volume_capability is required"):
        required_capability(False, csi_pb2.VolumeCapability())
    assert required_capability(True, block_capability()).access_type is AccessType.BLOCK
