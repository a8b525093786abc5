"""csi.redact.safe_text: the form of a request that may be logged."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.protobuf.message import Message

from csi.pb import csi_pb2
from csi.redact import safe_text
from tests.support.driver import RunningDriver
from tests.support.kubelet import mount_capability

SECRET = "s3cr3t-Value-42"
FLAG = "context=hidden-flag-9"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.tokenpayload"
TOKENS_KEY = "csi.storage.k8s.io/serviceAccount.tokens"


def create_request() -> csi_pb2.CreateVolumeRequest:
    return csi_pb2.CreateVolumeRequest(
        name="pvc-visible",
        parameters={"volumeType": "directory"},
        secrets={"password": SECRET, "user": SECRET},
        volume_capabilities=[mount_capability("ext4", flags=(FLAG, "noatime"))],
    )


def stage_request() -> csi_pb2.NodeStageVolumeRequest:
    return csi_pb2.NodeStageVolumeRequest(
        volume_id="vol-visible",
        staging_target_path="/staging/visible",
        volume_capability=mount_capability("xfs", flags=(FLAG,)),
        secrets={"key": SECRET},
        publish_context={"device": "/dev/visible", "apiKey": SECRET},
        volume_context={TOKENS_KEY: TOKEN, "pod": "visible-pod"},
    )


def publish_request() -> csi_pb2.NodePublishVolumeRequest:
    return csi_pb2.NodePublishVolumeRequest(
        volume_id="vol-visible",
        staging_target_path="/staging/visible",
        target_path="/target/visible",
        volume_capability=mount_capability(flags=(FLAG,)),
        secrets={"token": SECRET},
        volume_context={TOKENS_KEY: TOKEN, "csi.storage.k8s.io/pod.name": "visible-pod"},
        readonly=True,
    )


CASES = {
    "create": (
        create_request,
        ["pvc-visible", "volumeType", "directory", "ext4", "SINGLE_NODE_WRITER"],
    ),
    "stage": (stage_request, ["vol-visible", "/staging/visible", "xfs", "/dev/visible"]),
    "publish": (publish_request, ["vol-visible", "/target/visible", "visible-pod", "readonly"]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_secrets_flags_and_tokens_removed(case: tuple[type, list[str]]) -> None:
    build, visible = case
    request: Message = build()
    original = request.SerializeToString()
    text = safe_text(request)
    for hidden in (SECRET, FLAG, "hidden-flag", TOKEN, "tokenpayload"):
        assert hidden not in text
    for shown in visible:
        assert shown in text
    assert "\n" not in text
    assert request.SerializeToString() == original  # the request itself is untouched


def test_flag_count_kept() -> None:
    text = safe_text(create_request())
    assert text.count('mount_flags: "***"') == 2


def test_validate_and_delete_secrets_removed() -> None:
    requests: list[Message] = [
        csi_pb2.DeleteVolumeRequest(volume_id="vol-visible", secrets={"k": SECRET}),
        csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id="vol-visible",
            volume_capabilities=[mount_capability(flags=(FLAG,))],
            secrets={"k": SECRET},
            volume_context={"secretName": SECRET},
        ),
        csi_pb2.NodeExpandVolumeRequest(volume_id="vol-visible", secrets={"k": SECRET}),
        csi_pb2.ControllerExpandVolumeRequest(volume_id="vol-visible", secrets={"k": SECRET}),
        csi_pb2.CreateSnapshotRequest(
            source_volume_id="vol-visible", name="snap", secrets={"k": SECRET}
        ),
    ]
    for request in requests:
        text = safe_text(request)
        assert "vol-visible" in text
        assert SECRET not in text
        assert FLAG not in text


def test_plain_request_unchanged() -> None:
    request = csi_pb2.ListVolumesRequest(max_entries=3, starting_token="vol-abc")
    assert safe_text(request) == 'max_entries: 3 starting_token: "vol-abc"'


def test_rpc_logs_never_show_secrets(
    driver: RunningDriver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = create_request()
    good.capacity_range.required_bytes = 1024 * 1024
    driver.client.controller.CreateVolume(good)
    bad = create_request()
    bad.parameters["unknown"] = "x"  # fails validation: logged at warning level
    with pytest.raises(grpc.RpcError):
        driver.client.controller.CreateVolume(bad)
    with pytest.raises(grpc.RpcError):
        driver.client.node.NodeStageVolume(stage_request())
    with pytest.raises(grpc.RpcError):
        driver.client.node.NodePublishVolume(publish_request())
    assert "CreateVolume" in caplog.text
    assert "pvc-visible" in caplog.text
    for hidden in (SECRET, FLAG, TOKEN):
        assert hidden not in caplog.text
