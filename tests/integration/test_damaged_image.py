"""A finished image whose filesystem cannot be found is damaged, not new: never formatted."""

from __future__ import annotations

import hashlib

import grpc

from tests.integration.encryption_support import KeyedSession
from tests.support.kubelet import EXT4, MIB
from tests.support.status import rpc_error


def test_stage_refuses_to_format_a_damaged_image(session: KeyedSession) -> None:
    volume = session.create("damaged", EXT4)
    image = session.kubelet.image(volume)
    with open(image, "r+b") as fh:  # wipe the primary superblock and the first blocks
        fh.write(bytes(4 * MIB))
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    error = rpc_error(lambda: session.mount(volume, EXT4))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error.details()
    assert "will not format" in (error.details() or "")
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before, "the image was changed"
