"""The generated stubs match proto/, the csi_secret option is where logging relies on it, and
the kubelet's registration API is the wire the kubelet speaks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from csi.pb import csi_pb2, pluginregistration_pb2

ROOT = Path(__file__).resolve().parents[2]
SECRET_FIELDS = [
    ("CreateVolumeRequest", "secrets"),
    ("DeleteVolumeRequest", "secrets"),
    ("ControllerPublishVolumeRequest", "secrets"),
    ("ValidateVolumeCapabilitiesRequest", "secrets"),
    ("NodeStageVolumeRequest", "secrets"),
    ("NodePublishVolumeRequest", "secrets"),
    ("NodeExpandVolumeRequest", "secrets"),
]


def test_every_proto_has_stubs() -> None:
    protos = sorted(p.stem for p in (ROOT / "proto").glob("*.proto"))
    assert protos == ["csi", "pluginregistration"]
    for name in protos:
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert (ROOT / "csi" / "pb" / f"{name}{suffix}").is_file(), f"{name}{suffix}"


def test_generated_stubs_are_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gen-proto"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_proto_declares_csi_secret() -> None:
    text = (ROOT / "proto" / "csi.proto").read_text()
    assert re.search(r"\bbool\s+csi_secret\s*=\s*1059\s*;", text)
    assert csi_pb2.csi_secret.number == 1059


@pytest.mark.parametrize(("message", "field"), SECRET_FIELDS)
def test_secret_fields_carry_option(message: str, field: str) -> None:
    descriptor = getattr(csi_pb2, message).DESCRIPTOR.fields_by_name[field]
    assert descriptor.GetOptions().Extensions[csi_pb2.csi_secret] is True


@pytest.mark.parametrize(
    ("message", "field"), [("CreateVolumeRequest", "name"), ("CreateVolumeRequest", "parameters")]
)
def test_plain_fields_do_not(message: str, field: str) -> None:
    descriptor = getattr(csi_pb2, message).DESCRIPTOR.fields_by_name[field]
    assert descriptor.GetOptions().Extensions[csi_pb2.csi_secret] is False


STRING, BOOL = FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BOOL
# k8s.io/kubelet v0.37.2, pkg/apis/pluginregistration/v1/api.proto: name, number, type, repeated.
REGISTRATION_MESSAGES = {
    "PluginInfo": [
        ("type", 1, STRING, False),
        ("name", 2, STRING, False),
        ("endpoint", 3, STRING, False),
        ("supported_versions", 4, STRING, True),
    ],
    "RegistrationStatus": [("plugin_registered", 1, BOOL, False), ("error", 2, STRING, False)],
    "RegistrationStatusResponse": [],
    "InfoRequest": [],
}


def test_registration_messages_match_the_kubelets() -> None:
    file = pluginregistration_pb2.DESCRIPTOR
    assert file.package == "pluginregistration"
    assert set(file.message_types_by_name) == set(REGISTRATION_MESSAGES)
    for message, fields in REGISTRATION_MESSAGES.items():
        descriptor = file.message_types_by_name[message]
        found = [(f.name, f.number, f.type, f.is_repeated) for f in descriptor.fields]
        assert found == fields, message


def test_registration_service_matches_the_kubelets() -> None:
    service = pluginregistration_pb2.DESCRIPTOR.services_by_name["Registration"]
    assert service.full_name == "pluginregistration.Registration"
    methods = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    assert methods == {
        "GetInfo": ("InfoRequest", "PluginInfo"),
        "NotifyRegistrationStatus": ("RegistrationStatus", "RegistrationStatusResponse"),
    }
