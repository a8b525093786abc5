"""The generated stubs match proto/, and the csi_secret option is where logging relies on it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from csi.pb import csi_pb2

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
