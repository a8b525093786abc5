"""csi.volumes.params.parse_spec: StorageClass parameters -> a validated volume spec."""

from __future__ import annotations

import pytest

from csi.errors import InvalidArgument
from csi.state.records import AccessType, VolumeKind
from csi.volumes.params import parse_spec, volume_context

MOUNT = [AccessType.MOUNT]
BLOCK = [AccessType.BLOCK]


def test_defaults_to_loop_ext4() -> None:
    spec = parse_spec({}, MOUNT, [""])
    assert (spec.kind, spec.access_type, spec.fs_type) == (
        VolumeKind.LOOP,
        AccessType.MOUNT,
        "ext4",
    )
    assert volume_context(spec) == {"volumeType": "loop", "fsType": "ext4"}


def test_directory() -> None:
    spec = parse_spec({"volumeType": "directory"}, MOUNT, [""])
    assert spec.kind is VolumeKind.DIRECTORY
    assert spec.fs_type == ""
    assert volume_context(spec) == {"volumeType": "directory"}


@pytest.mark.parametrize(
    ("parameters", "requested"),
    [
        ({"fsType": "xfs"}, [""]),
        ({"csi.storage.k8s.io/fstype": "xfs"}, [""]),
        ({"fsType": "xfs", "csi.storage.k8s.io/fstype": "xfs"}, ["xfs"]),
        ({}, ["xfs"]),
        ({"volumeType": "loop"}, ["xfs", ""]),
    ],
)
def test_xfs(parameters: dict[str, str], requested: list[str]) -> None:
    spec = parse_spec(parameters, MOUNT, requested)
    assert spec.fs_type == "xfs"
    assert volume_context(spec) == {"volumeType": "loop", "fsType": "xfs"}


@pytest.mark.parametrize(
    ("parameters", "requested"),
    [
        ({"fsType": "ext4", "csi.storage.k8s.io/fstype": "xfs"}, [""]),
        ({"fsType": "ext4"}, ["xfs"]),
        ({}, ["ext4", "xfs"]),
    ],
)
def test_conflicting_fs_types(parameters: dict[str, str], requested: list[str]) -> None:
    with pytest.raises(InvalidArgument, match="conflicting"):
        parse_spec(parameters, MOUNT * len(requested), requested)


@pytest.mark.parametrize("fs_type", ["btrfs", "ext3", "EXT4"])
def test_unsupported_fs(fs_type: str) -> None:
    with pytest.raises(InvalidArgument, match="fsType"):
        parse_spec({"fsType": fs_type}, MOUNT, [""])


@pytest.mark.parametrize("key", ["fstype", "volumetype", "size", "csi.storage.k8s.io"])
def test_unknown_parameter_refused(key: str) -> None:
    with pytest.raises(InvalidArgument, match="unknown parameter") as info:
        parse_spec({key: "x"}, MOUNT, [""])
    assert key in info.value.message


def test_unknown_volume_type() -> None:
    with pytest.raises(InvalidArgument, match="volumeType"):
        parse_spec({"volumeType": "nfs"}, MOUNT, [""])


def test_provisioner_metadata_accepted_and_not_recorded() -> None:
    parameters = {
        "volumeType": "directory",
        "csi.storage.k8s.io/pvc/name": "data",
        "csi.storage.k8s.io/pvc/namespace": "default",
        "csi.storage.k8s.io/pv/name": "pvc-123",
    }
    spec = parse_spec(parameters, MOUNT, [""])
    assert volume_context(spec) == {"volumeType": "directory"}


def test_block_with_directory_refused() -> None:
    with pytest.raises(InvalidArgument, match="block"):
        parse_spec({"volumeType": "directory"}, BLOCK, [""])


@pytest.mark.parametrize("parameters", [{"fsType": "xfs"}, {"csi.storage.k8s.io/fstype": "btrfs"}])
def test_block_ignores_fs_type(parameters: dict[str, str]) -> None:
    spec = parse_spec(parameters, BLOCK, [""])
    assert (spec.kind, spec.access_type, spec.fs_type) == (VolumeKind.LOOP, AccessType.BLOCK, "")
    assert volume_context(spec) == {"volumeType": "loop"}


def test_directory_ignores_fs_type() -> None:
    spec = parse_spec({"volumeType": "directory", "fsType": "xfs"}, MOUNT, [""])
    assert spec.fs_type == ""
    assert volume_context(spec) == {"volumeType": "directory"}


def test_mixed_access_types_refused() -> None:
    with pytest.raises(InvalidArgument, match="all be block or all be mount"):
        parse_spec({}, [AccessType.BLOCK, AccessType.MOUNT], ["", ""])


@pytest.mark.parametrize(
    "parameters",
    [{"csi.storage.k8s.io/pvc/name": "x" * 5000}, {"csi.storage.k8s.io/pvc/name": "a\x00"}],
)
def test_parameter_map_limits(parameters: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument, match="parameters"):
        parse_spec(parameters, MOUNT, [""])
