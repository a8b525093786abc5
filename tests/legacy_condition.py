"""Read the CSI 1.12 volume condition from a reply, as a 1.12 client would.

The stubs are CSI 1.13, which reserves the field, so the test builds the 1.12 shape of
the message from a descriptor of its own (field numbers as CSI 1.12 has them) and parses
the reply's bytes with it: an independent check of what csi/services/legacy_condition.py
writes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory


class Legacy(NamedTuple):
    abnormal: bool
    message: str


def _holder() -> Any:
    proto = descriptor_pb2.FileDescriptorProto(name="legacy112.proto", package="legacy112")
    condition = proto.message_type.add(name="VolumeCondition")
    condition.field.add(name="abnormal", number=1, type=8, label=1)  # bool
    condition.field.add(name="message", number=2, type=9, label=1)  # string
    holder = proto.message_type.add(name="Holder")
    holder.field.add(
        name="volume_condition", number=2, type=11, label=1, type_name=".legacy112.VolumeCondition"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("legacy112.Holder"))


HOLDER = _holder()


def legacy_condition(reply: message.Message) -> Legacy | None:
    """The 1.12 condition in ``reply`` (a VolumeStatus or NodeGetVolumeStatsResponse)."""
    holder = HOLDER.FromString(reply.SerializeToString())
    if not holder.HasField("volume_condition"):
        return None
    return Legacy(holder.volume_condition.abnormal, holder.volume_condition.message)
