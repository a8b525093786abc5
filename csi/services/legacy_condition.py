"""The CSI 1.12 volume condition, written on the wire for orchestrators that still read it.

CSI 1.13 retired `VolumeCondition` (field 2 of ListVolumes' and ControllerGetVolume's
VolumeStatus and of NodeGetVolumeStatsResponse, and the VOLUME_CONDITION capabilities,
controller 11 and node 4) in favour of the health RPCs, and reserved those numbers. Kubernetes
1.34 to 1.36 still read them: the kubelet from NodeGetVolumeStats, the external health monitor
from ListVolumes or ControllerGetVolume. Our stubs are generated from the 1.13 proto, which no
longer names the field, so this module writes its bytes itself and merges them into the reply
(protobuf keeps fields it does not know, and serialises them again). A 1.13 client skips them.

The message is tiny: `VolumeCondition { bool abnormal = 1; string message = 2; }`.
"""

from __future__ import annotations

from google.protobuf.message import Message

from csi.volumes.conditions import Condition

FIELD = 2  # volume_condition, in each of the three replies
CONTROLLER_CAPABILITY = 11  # ControllerServiceCapability.RPC.VOLUME_CONDITION in 1.12
NODE_CAPABILITY = 4  # NodeServiceCapability.RPC.VOLUME_CONDITION in 1.12
_VARINT, _LEN = 0, 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def encode(condition: Condition) -> bytes:
    """Field 2 holding the 1.12 VolumeCondition for ``condition``."""
    text = condition.message.encode()
    inner = b""
    if condition.abnormal:
        inner += _key(1, _VARINT) + _varint(1)
    if text:
        inner += _key(2, _LEN) + _varint(len(text)) + text
    return _key(FIELD, _LEN) + _varint(len(inner)) + inner


def attach(reply: Message, condition: Condition) -> None:
    """Add the 1.12 condition to ``reply`` (a VolumeStatus or NodeGetVolumeStatsResponse)."""
    reply.MergeFromString(encode(condition))
