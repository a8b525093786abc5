"""Issue 18: every mistake a user can make in a StorageClass or a claim reaches them with its
cause and its fix, through the status message the provisioner (ProvisioningFailed on the
claim) or the kubelet (FailedMount on the pod) shows, and GetCapacity never turns a
configuration error into "not enough free storage".

Each test makes the mistake through the real in-process server where no root is needed
(directory volumes, refusals that come before any host work); the README's table "When
something is wrong" quotes these messages."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from csi.config import MIB
from csi.errors import InvalidArgument, OutOfRange
from csi.pb import csi_pb2
from csi.state.records import AccessType, VolumeKind, VolumeRecord, VolumeSpec
from csi.validation import parse_capability, unsupported_reason
from csi.volumes import encryption, sizing
from csi.volumes.params import check_mount_options_allowed, check_snapshot_parameters, parse_spec
from tests.support.driver import RunningDriver, make_config, running_driver
from tests.support.kubelet import block_capability, mount_capability
from tests.support.status import rpc_error
from tests.unit.support import DIRECTORY, Mode, create, create_request, on_disk

Code = grpc.StatusCode
MOUNT = [AccessType.MOUNT]
KNOWN = "allowedMountOptions, csi.storage.k8s.io/fstype, encryption, fsType, mode, volumeType"
CLASS_FIX = "fix the StorageClass (delete and re-create it: its parameters cannot be edited)"
KEY = "k" * 32  # a usable encryptionKey; never in any message
ENCRYPTED = {"volumeType": "loop", "csi.storage.k8s.io/fstype": "ext4", "encryption": "fscrypt"}


def refused(driver: RunningDriver, request: csi_pb2.CreateVolumeRequest) -> grpc.RpcError:
    """CreateVolume's refusal, after checking it created nothing."""
    before = on_disk(driver.data_dir)
    error = rpc_error(lambda: driver.client.controller.CreateVolume(request))
    assert on_disk(driver.data_dir) == before
    assert error.code() not in (Code.UNKNOWN, Code.INTERNAL), error.details()
    return error


def capacity(driver: RunningDriver, parameters: dict[str, str]) -> csi_pb2.GetCapacityResponse:
    request = csi_pb2.GetCapacityRequest(parameters=parameters)  # the provisioner's: no caps
    return driver.client.controller.GetCapacity(request)


# -- 1. an unknown or misspelt parameter ---------------------------------------------------
def test_misspelt_parameter_names_the_closest_key() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_spec({"volumeType": "loop", "fsTyp": "ext4"}, MOUNT, [""])
    assert info.value.message == (
        f'unknown parameter "fsTyp" (did you mean "fsType"?); known: {KNOWN}; {CLASS_FIX}'
    )


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("fstype", "fsType"),
        ("volumetype", "volumeType"),
        ("VolumeType", "volumeType"),
        ("encyption", "encryption"),
        ("allowedMountOption", "allowedMountOptions"),
        ("mod", "mode"),
    ],
)
def test_close_keys(key: str, meant: str) -> None:
    with pytest.raises(InvalidArgument, match="unknown parameter") as info:
        parse_spec({key: "x"}, MOUNT, [""])
    assert f'"{key}" (did you mean "{meant}"?)' in info.value.message


def test_unrelated_key_gets_no_guess_and_several_are_listed() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_spec({"size": "1Gi", "fsTyp": "xfs"}, MOUNT, [""])
    message = info.value.message
    assert message.startswith('unknown parameters "fsTyp" (did you mean "fsType"?), "size";')
    assert f"known: {KNOWN}" in message


def test_unknown_parameter_through_create_volume(driver: RunningDriver) -> None:
    error = refused(driver, create_request("typo", parameters={**DIRECTORY, "fsTyp": "ext4"}))
    assert error.code() is Code.INVALID_ARGUMENT
    assert 'unknown parameter "fsTyp" (did you mean "fsType"?)' in (error.details() or "")


def test_misspelt_volume_type_value() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_spec({"volumeType": "directroy"}, MOUNT, [""])
    assert info.value.message == (
        'volumeType "directroy" (did you mean "directory"?) is not supported; supported: '
        f"directory, loop; {CLASS_FIX}"
    )


def test_snapshot_parameters_name_the_key() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_snapshot_parameters({"fsType": "ext4"})
    assert (
        info.value.message == 'unknown parameter "fsType": this driver takes none here; remove them'
    )


# -- GetCapacity: a configuration error is not "not enough storage" -------------------------
@pytest.mark.parametrize(
    "parameters",
    [
        {"volumeType": "loop", "fsTyp": "ext4"},
        {"volumeType": "nfs"},
        {"fsType": "btrfs"},
        {"volumeType": "directory", "mode": "rwx"},
        {"volumeType": "directory", "encryption": "fscrypt"},
    ],
    ids=["typo", "volume-type", "fs-type", "mode", "encryption-on-directory"],
)
def test_capacity_of_a_refused_class_is_the_nodes(
    driver: RunningDriver, parameters: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    good = capacity(driver, {"volumeType": "loop"})
    with caplog.at_level(logging.WARNING, logger="csi.services.controller"):
        bad = capacity(driver, parameters)
        again = capacity(driver, parameters)
    assert bad.available_capacity > 0
    assert bad.available_capacity == pytest.approx(good.available_capacity, rel=0.01)
    assert bad.maximum_volume_size.value == bad.available_capacity
    assert not bad.HasField("minimum_volume_size")  # unknown: no kind to take it from
    assert again.available_capacity > 0
    warnings = [r for r in caplog.records if "capacity_for_refused_parameters" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]  # once, not per call
    assert warnings[0].levelno == logging.WARNING
    # ... and CreateVolume is where the user reads it.
    error = refused(driver, create_request("refused-class", parameters=parameters))
    assert error.code() is Code.INVALID_ARGUMENT
    assert error.details()


def test_capacity_keeps_zero_for_another_node(driver: RunningDriver) -> None:
    request = csi_pb2.GetCapacityRequest(
        parameters={"fsTyp": "ext4"},
        accessible_topology=csi_pb2.Topology(
            segments={"topology.localvol.csi.dev/node": "other-node"}
        ),
    )
    assert driver.client.controller.GetCapacity(request).available_capacity == 0


# -- 2. an unsupported filesystem ----------------------------------------------------------
def test_unsupported_fs_type_names_the_supported_ones(driver: RunningDriver) -> None:
    error = refused(driver, create_request("btrfs", parameters={"fsType": "btrfs"}))
    assert error.code() is Code.INVALID_ARGUMENT
    assert error.details() == (
        'fsType "btrfs" is not supported; supported: ext4, xfs (the StorageClass\'s fsType or '
        "csi.storage.k8s.io/fstype parameter, or the PV's fsType)"
    )


def test_fs_type_from_the_capability(driver: RunningDriver) -> None:
    caps = [mount_capability(fs_type="EXT4")]  # the provisioner moves the class's fstype here
    error = refused(driver, create_request("upper", parameters={}, caps=caps))
    assert 'fsType "EXT4" (did you mean "ext4"?) is not supported' in (error.details() or "")


# -- 3. sizes ------------------------------------------------------------------------------
def test_above_max_volume_size_names_request_and_limit(tmp_path: Path) -> None:
    with running_driver(tmp_path / "data", max_volume_size=8 * MIB) as running:
        error = refused(running, create_request("big", required=9 * MIB))
        assert error.code() is Code.OUT_OF_RANGE
        assert error.details() == (
            "requested size 9Mi (9437184 bytes) is above this driver's maximum volume size "
            "8Mi (8388608 bytes) (--max-volume-size); ask for at most that, or have the "
            "driver's --max-volume-size raised"
        )
        # The scheduler must let such a claim through, so the user reads this message:
        # GetCapacity's maximum is the room the node has, not --max-volume-size.
        room = capacity(running, DIRECTORY)
        assert room.maximum_volume_size.value == room.available_capacity > 9 * MIB


def test_below_the_filesystem_minimum_is_rounded_up(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ext4 = VolumeSpec(kind=VolumeKind.LOOP, access_type=AccessType.MOUNT, fs_type="ext4")
    xfs = VolumeSpec(kind=VolumeKind.LOOP, access_type=AccessType.MOUNT, fs_type="xfs")
    assert sizing.choose_size(MIB, 0, ext4, config) == 16 * MIB
    assert sizing.choose_size(1, 0, xfs, config) == 300 * MIB
    # (tests/integration/test_mistakes.py: the reply's capacity_bytes is what was made)


# -- 4. block access of a directory class --------------------------------------------------
def test_block_claim_of_a_directory_class(driver: RunningDriver) -> None:
    error = refused(driver, create_request("block-dir", caps=[block_capability()]))
    assert error.code() is Code.INVALID_ARGUMENT
    assert error.details() == (
        "block access (volumeMode: Block) needs a loop volume, and this StorageClass has "
        "volumeType=directory; use a class with volumeType=loop for raw block claims "
        "(e.g. localvol-block), or volumeMode: Filesystem"
    )


# -- 5. multi-node access modes ------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "named"),
    [
        (Mode.MULTI_NODE_MULTI_WRITER, "MULTI_NODE_MULTI_WRITER (ReadWriteMany)"),
        (Mode.MULTI_NODE_READER_ONLY, "MULTI_NODE_READER_ONLY (ReadOnlyMany)"),
        (Mode.MULTI_NODE_SINGLE_WRITER, "MULTI_NODE_SINGLE_WRITER"),
    ],
)
def test_multi_node_modes_say_why_and_what_to_use(
    driver: RunningDriver, mode: int, named: str
) -> None:
    error = refused(driver, create_request("rwx", caps=[mount_capability(mode=mode)]))
    assert error.code() is Code.INVALID_ARGUMENT
    assert error.details() == (
        f"access mode {named} is not supported: volumes are local to one node; use "
        "ReadWriteOnce (pods on one node share it) or ReadWriteOncePod"
    )


def test_mode_outside_the_spec(driver: RunningDriver) -> None:
    error = refused(driver, create_request("odd", caps=[mount_capability(mode=99)]))
    assert error.details() == "access mode #99 is not a CSI access mode"


# -- 6. encryption -------------------------------------------------------------------------
def encrypted_request(name: str, secrets: dict[str, str]) -> csi_pb2.CreateVolumeRequest:
    request = create_request(name, required=16 * MIB, parameters=ENCRYPTED)
    request.secrets.update(secrets)
    return request


def test_encryption_without_any_secret_names_the_class_parameters(driver: RunningDriver) -> None:
    error = refused(driver, encrypted_request("no-secret", {}))
    assert error.code() is Code.INVALID_ARGUMENT
    assert error.details() == (
        "encryption=fscrypt needs a Secret holding the key 'encryptionKey', and none was "
        "passed: the StorageClass needs the parameters "
        "csi.storage.k8s.io/provisioner-secret-name and "
        "csi.storage.k8s.io/provisioner-secret-namespace (and "
        "csi.storage.k8s.io/node-stage-secret-name and "
        "csi.storage.k8s.io/node-stage-secret-namespace) naming that Secret"
    )


def test_secret_without_the_key(driver: RunningDriver) -> None:
    error = refused(driver, encrypted_request("wrong-key-name", {"key": KEY}))
    assert error.code() is Code.INVALID_ARGUMENT
    details = error.details() or ""
    assert "has no key 'encryptionKey'" in details
    assert "add encryptionKey (at least 16 bytes)" in details
    assert KEY not in details


@pytest.mark.parametrize("short", ["x", "fifteen-bytes!!"])
def test_short_key_names_the_minimum_not_the_length(driver: RunningDriver, short: str) -> None:
    error = refused(driver, encrypted_request("short-key", {"encryptionKey": short}))
    assert error.code() is Code.INVALID_ARGUMENT
    details = error.details() or ""
    assert details == (
        "the Secret's encryptionKey is too short: it must hold at least 16 bytes "
        "(e.g. 32 random bytes, base64-encoded)"
    )
    assert short not in details
    assert not re.search(rf"\b{len(short)}\b", details)  # nothing about the value, not its size


def test_stage_secret_messages_name_the_node_stage_parameters() -> None:
    with pytest.raises(InvalidArgument) as none:
        encryption.secret_from({}, encryption.SecretUse.STAGE)
    assert (
        "needs the parameters csi.storage.k8s.io/node-stage-secret-name and " in none.value.message
    )
    with pytest.raises(InvalidArgument) as missing:
        encryption.secret_from({"other": KEY}, encryption.SecretUse.STAGE)
    assert "csi.storage.k8s.io/node-stage-secret-name" in missing.value.message
    assert KEY not in missing.value.message
    # (a key that does not match the volume's: tests/integration/test_encryption.py)


def test_node_stage_without_secret_refuses_before_anything(
    driver: RunningDriver, tmp_path: Path
) -> None:
    """An encrypted volume record staged with no secrets: the refusal names the node-stage
    parameters (a directory record stands in; the check comes before any host work)."""
    spec = VolumeSpec(
        kind=VolumeKind.LOOP, access_type=AccessType.MOUNT, fs_type="ext4", encrypted=True
    )
    record = VolumeRecord(
        volume_id="vol-enc", name="enc", spec=spec, capacity_bytes=16 * MIB, created_at=0.0
    )
    with pytest.raises(InvalidArgument) as info:
        driver.driver.volumes.stage(record, tmp_path, parse_capability(mount_capability()), {})
    assert "csi.storage.k8s.io/node-stage-secret-name" in info.value.message


# -- 7. a source of another kind, or larger than the limit ---------------------------------
def source(driver: RunningDriver, required: int = MIB) -> str:
    return create(driver.client, "source", required=required).volume_id


def test_clone_of_another_kind_names_both(driver: RunningDriver) -> None:
    source_id = source(driver)
    request = create_request("clone", parameters={"volumeType": "loop"})
    request.volume_content_source.volume.volume_id = source_id
    error = refused(driver, request)
    assert error.code() is Code.INVALID_ARGUMENT
    assert error.details() == (
        f"the source volume {source_id} is a directory volume, but this request is for a loop "
        "ext4 filesystem volume; clone or restore into a StorageClass and volumeMode of the "
        "source's kind (volumeType, filesystem, encryption)"
    )


def test_restore_of_another_kind_names_both(driver: RunningDriver) -> None:
    source_id = source(driver)
    snapshot = driver.client.controller.CreateSnapshot(
        csi_pb2.CreateSnapshotRequest(source_volume_id=source_id, name="snap")
    ).snapshot
    request = create_request("restore", parameters={}, caps=[block_capability()])
    request.volume_content_source.snapshot.snapshot_id = snapshot.snapshot_id
    error = refused(driver, request)
    assert error.code() is Code.INVALID_ARGUMENT
    assert (error.details() or "").startswith(
        f"the source snapshot {snapshot.snapshot_id} is a copy of a directory volume, but this "
        "request is for a loop raw block volume (volumeMode: Block);"
    )


def test_source_above_the_limit_names_both_sizes(driver: RunningDriver) -> None:
    source_id = source(driver, required=4 * MIB)
    request = create_request("small-clone", required=MIB, limit=2 * MIB)
    request.volume_content_source.volume.volume_id = source_id
    error = refused(driver, request)
    assert error.code() is Code.OUT_OF_RANGE
    assert error.details() == (
        f"the source volume {source_id} holds 4Mi (4194304 bytes), more than this request's "
        "limit of 2Mi (2097152 bytes): a clone or restore is at least its source's size; ask "
        "for at least that"
    )


# -- 8. mount options outside allowedMountOptions ------------------------------------------
LIMITED = {**DIRECTORY, "allowedMountOptions": "noatime,nodev"}
OPTIONS_REFUSED = (
    "mount options exec, sync not allowed: the StorageClass's allowedMountOptions parameter "
    "allows only noatime, nodev; remove exec, sync from the mountOptions of the StorageClass "
    "(and of the PV, for a volume already made), or use a class whose allowedMountOptions "
    "lists them (a volume keeps the list it was created with)"
)


def test_class_mount_options_refused_at_create(driver: RunningDriver) -> None:
    caps = [mount_capability(flags=("noatime", "sync", "exec=1"))]
    error = refused(driver, create_request("opts", parameters=LIMITED, caps=caps))
    assert error.code() is Code.INVALID_ARGUMENT
    assert error.details() == OPTIONS_REFUSED


def test_pv_mount_options_refused_at_stage_and_publish(
    driver: RunningDriver, tmp_path: Path
) -> None:
    volume = create(driver.client, "opts", parameters=LIMITED)
    staging, target = tmp_path / "staging", tmp_path / "target"
    staging.mkdir()
    cap = mount_capability(flags=("sync", "noatime", "exec"))
    stage = csi_pb2.NodeStageVolumeRequest(
        volume_id=volume.volume_id, staging_target_path=str(staging), volume_capability=cap
    )
    error = rpc_error(lambda: driver.client.node.NodeStageVolume(stage))
    assert error.code() is Code.INVALID_ARGUMENT
    assert error.details() == OPTIONS_REFUSED
    publish = csi_pb2.NodePublishVolumeRequest(
        volume_id=volume.volume_id,
        staging_target_path=str(staging),
        target_path=str(target),
        volume_capability=cap,
    )
    error = rpc_error(lambda: driver.client.node.NodePublishVolume(publish))
    assert error.code() is Code.INVALID_ARGUMENT
    assert error.details() == OPTIONS_REFUSED
    assert not target.exists()


# -- the README's table quotes these messages verbatim -------------------------------------
def _message(call: Callable[[], object]) -> str:
    with pytest.raises(InvalidArgument) as info:
        call()
    return info.value.message


def test_readme_quotes_the_drivers_messages(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### When something is wrong", 1)[1].split("\n## ", 1)[0]
    limited = parse_spec({**DIRECTORY, "allowedMountOptions": "noatime,nodev"}, MOUNT, [""])
    ext4 = parse_spec({}, MOUNT, [""])
    with pytest.raises(OutOfRange) as too_big:
        sizing.choose_size(20 << 40, 0, ext4, make_config(tmp_path))
    rwx = unsupported_reason(mount_capability(mode=Mode.MULTI_NODE_MULTI_WRITER))
    quoted = [
        _message(lambda: parse_spec({"volumeType": "loop", "fsTyp": "ext4"}, MOUNT, [""])),
        _message(lambda: parse_spec({"fsType": "btrfs"}, MOUNT, [""])),
        too_big.value.message,
        _message(lambda: parse_spec(DIRECTORY, [AccessType.BLOCK], [""])),
        rwx,
        _message(lambda: encryption.secret_from({})),
        _message(lambda: encryption.secret_from({"key": KEY})),
        _message(lambda: encryption.secret_from({"encryptionKey": "short"})),
        encryption.WRONG_KEY,
        _message(lambda: check_mount_options_allowed(limited, ["noatime", "sync"])),
    ]
    for message in quoted:
        assert f"`{message}`" in section, message
