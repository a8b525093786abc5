"""Copies of requests that are safe to log: secrets, mount flags and tokens removed."""

from __future__ import annotations

from typing import Any

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from csi.pb import csi_pb2

REDACTED = "***"
# volume_context keys the kubelet fills with credentials (service account tokens).
SENSITIVE_CONTEXT_MARKERS = ("token", "secret", "password", "key")


SECRET_OPTION: Any = csi_pb2.csi_secret


def _is_secret(field: FieldDescriptor) -> bool:
    return bool(field.GetOptions().Extensions[SECRET_OPTION])


def _scrub(message: Message) -> None:
    for field, value in list(message.ListFields()):
        if _is_secret(field):
            message.ClearField(field.name)
            continue
        if field.name == "mount_flags":
            count = len(value)
            message.ClearField(field.name)
            getattr(message, field.name).extend([REDACTED] * count)
            continue
        if field.name == "volume_context" or field.name == "publish_context":
            for key in list(value):
                if any(marker in key.lower() for marker in SENSITIVE_CONTEXT_MARKERS):
                    value[key] = REDACTED
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                continue
            if field.is_repeated:
                for item in value:
                    _scrub(item)
            else:
                _scrub(value)


def safe_text(message: Message) -> str:
    """A one-line text form of ``message`` with every sensitive value removed."""
    copy = type(message)()
    copy.CopyFrom(message)
    _scrub(copy)
    return text_format.MessageToString(copy, as_one_line=True)
