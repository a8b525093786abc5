"""Native filesystem encryption (fscrypt, policy v2) through the kernel's ioctls.

No tool is forked, so keys never appear in an argument list (``ps``). Keys are added to and
removed from a mounted filesystem; a directory given a policy encrypts everything created
beneath it with the key whose identifier the policy names. Each ioctl is a step of
csi.host.kernel (``fscrypt:add-key``...): it fails as IoctlFailed, or on demand.
"""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

from csi.host import kernel
from csi.host.errors import IoctlFailed, KeyMismatch

KEY_SIZE = 64  # AES-256-XTS takes a 512-bit master key
_KEY_SPEC_TYPE_IDENTIFIER = 2
_MODE_AES_256_XTS = 1
_MODE_AES_256_CTS = 4
_POLICY_FLAGS_PAD_32 = 0x03
_POLICY_V2 = 2


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord("f") << 8) | nr


def _ior(nr: int, size: int) -> int:
    return (2 << 30) | (size << 16) | (ord("f") << 8) | nr


# struct fscrypt_key_specifier: u32 type, u32 reserved, u8 identifier[32 (union)] = 40 bytes
_SPEC = struct.Struct("<II32s")
_ADD_KEY = _iowr(23, 80)  # key_spec, u32 raw_size, u32 key_id, u32 reserved[8]; raw follows
_REMOVE_KEY = _iowr(24, 64)  # key_spec, u32 removal_status_flags, u32 reserved[5]
_SET_POLICY = _ior(19, 12)  # the v1 size; the kernel reads the version byte first
_GET_POLICY_EX = _iowr(22, 9)  # u64 policy_size, then the policy
# struct fscrypt_policy_v2: version, contents mode, filenames mode, flags,
# log2_data_unit_size, reserved[3], master_key_identifier[16] = 24 bytes
_POLICY = struct.Struct("<BBBBB3s16s")


def _ioctl(step: str, path: Path, request: int, buffer: bytearray) -> None:
    """The ioctl on the directory ``path``; ``buffer`` is filled in place."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        kernel.ioctl(step, fd, request, buffer, where=str(path))
    finally:
        os.close(fd)


def add_key(mount_point: Path, raw_key: bytes) -> bytes:
    """Give the filesystem at ``mount_point`` a master key; returns its 16-byte identifier."""
    if len(raw_key) != KEY_SIZE:
        raise ValueError("fscrypt master keys are 64 bytes")
    buffer = bytearray(80 + KEY_SIZE)
    _SPEC.pack_into(buffer, 0, _KEY_SPEC_TYPE_IDENTIFIER, 0, b"")
    struct.pack_into("<II", buffer, 40, KEY_SIZE, 0)
    buffer[80 : 80 + KEY_SIZE] = raw_key
    try:
        _ioctl("fscrypt:add-key", mount_point, _ADD_KEY, buffer)
        return bytes(buffer[8:24])
    finally:
        buffer[:] = bytes(len(buffer))  # leave no copy of the key behind


def remove_key(mount_point: Path, identifier: bytes) -> None:
    """Remove the key: files under it become unreadable once nothing holds them open."""
    buffer = bytearray(64)
    _SPEC.pack_into(buffer, 0, _KEY_SPEC_TYPE_IDENTIFIER, 0, identifier)
    try:
        _ioctl("fscrypt:remove-key", mount_point, _REMOVE_KEY, buffer)
    except IoctlFailed as failed:
        if failed.errno != errno.ENOKEY:  # already gone
            raise


def policy_identifier(directory: Path) -> bytes | None:
    """The master key identifier of ``directory``'s v2 policy, or None if unencrypted."""
    buffer = bytearray(8 + 24)
    struct.pack_into("<Q", buffer, 0, 24)
    try:
        _ioctl("fscrypt:get-policy", directory, _GET_POLICY_EX, buffer)
    except IoctlFailed as failed:
        if failed.errno == errno.ENODATA:  # no policy: not encrypted
            return None
        raise
    version, *_rest, identifier = _POLICY.unpack_from(buffer, 8)
    if version != _POLICY_V2:
        raise KeyMismatch(f"directory has an fscrypt policy of version {version}")
    return bytes(identifier)


def set_policy(directory: Path, identifier: bytes) -> None:
    """Encrypt everything created under the (empty) ``directory`` with that key."""
    buffer = bytearray(
        _POLICY.pack(
            _POLICY_V2,
            _MODE_AES_256_XTS,
            _MODE_AES_256_CTS,
            _POLICY_FLAGS_PAD_32,
            0,
            b"",
            identifier,
        )
    )
    _ioctl("fscrypt:set-policy", directory, _SET_POLICY, buffer)
