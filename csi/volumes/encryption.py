"""Encrypted loop volumes: ext4's native encryption, keyed by a Kubernetes Secret.

The secret (key ``encryptionKey`` in the CSI secrets: the provisioner's at CreateVolume, the
node-stage secret at NodeStageVolume) never reaches a disk or a log. From it and a random
per-volume salt the driver derives a 64-byte master key (HKDF-SHA256); the salt lives in the
filesystem itself (``.localvol-salt``, not secret), so snapshots, clones and restores carry
it and open with the same secret. The volume's files live in ``data/``, a directory with an
fscrypt v2 policy; pods see only ``data/``. The key is added to the filesystem when the
volume is staged and removed when it is unstaged.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from pathlib import Path

from csi.errors import FailedPrecondition, InvalidArgument
from csi.host import files, fscrypt, modes
from csi.host.fs import write_atomically

SECRET_KEY = "encryptionKey"  # noqa: S105 - the name of the key in the Secret, not a value
MIN_SECRET_BYTES = 16
SALT_FILE = ".localvol-salt"
DATA_DIR = "data"
INFO = b"localvol-csi fscrypt v2 master key"
SECRET_PARAMETER = "csi.storage.k8s.io/{use}-secret-{part}"  # noqa: S105 - parameter names


class SecretUse(enum.Enum):
    """Which of the StorageClass's secret references a call's secrets come from."""

    PROVISION = "provisioner"  # CreateVolume
    STAGE = "node-stage"  # NodeStageVolume

    def parameters(self) -> str:
        """The pair of StorageClass parameters that name this Secret."""
        name = SECRET_PARAMETER.format(use=self.value, part="name")
        namespace = SECRET_PARAMETER.format(use=self.value, part="namespace")
        return f"{name} and {namespace}"


WRONG_KEY = (
    f"the {SECRET_KEY} given does not unlock this volume: it does not match the key the "
    "volume was created with; name the Secret used at creation in the StorageClass's "
    f"{SecretUse.STAGE.parameters()}; nothing was mounted or changed"
)


def secret_from(secrets: Mapping[str, str], use: SecretUse = SecretUse.PROVISION) -> bytes:
    """The encryption secret from CSI secrets; INVALID_ARGUMENT if absent or weak. The
    messages name what to fix and never any part of a secret's value (not its length)."""
    if not secrets:
        # The provisioner and the kubelet pass a Secret only when the class names one;
        # a named Secret that is missing fails in them, before the driver is called.
        other = SecretUse.STAGE if use is SecretUse.PROVISION else SecretUse.PROVISION
        raise InvalidArgument(
            f"encryption=fscrypt needs a Secret holding the key {SECRET_KEY!r}, and none was "
            f"passed: the StorageClass needs the parameters {use.parameters()} (and "
            f"{other.parameters()}) naming that Secret"
        )
    value = secrets.get(SECRET_KEY)
    if not value:
        raise InvalidArgument(
            f"the Secret named by the StorageClass's {use.parameters()} has no key "
            f"{SECRET_KEY!r} (or an empty one); add {SECRET_KEY} (at least "
            f"{MIN_SECRET_BYTES} bytes) to that Secret"
        )
    raw = value.encode("utf-8")
    if len(raw) < MIN_SECRET_BYTES:
        raise InvalidArgument(
            f"the Secret's {SECRET_KEY} is too short: it must hold at least "
            f"{MIN_SECRET_BYTES} bytes (e.g. 32 random bytes, base64-encoded)"
        )
    return raw


def derive_key(secret: bytes, salt: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869): extract with the salt, expand to the 64-byte master key."""
    prk = hmac.new(salt, secret, hashlib.sha256).digest()
    out, block = b"", b""
    for counter in range(1, 3):
        block = hmac.new(prk, block + INFO + bytes([counter]), hashlib.sha256).digest()
        out += block
    return out[: fscrypt.KEY_SIZE]


def data_dir(mount_point: Path) -> Path:
    return mount_point / DATA_DIR


def set_up(mount_point: Path, secret: bytes, mode: int | None) -> None:
    """On a new filesystem: write the salt, make ``data/`` encrypted with the secret's key,
    then remove the key again (CreateVolume; the volume is unlocked when staged). The
    filesystem's root and salt are the driver's (0700, 0600); ``data/``, all pods see, gets
    ``mode`` or modes.VOLUME_ROOT."""
    files.set_mode(mount_point, modes.ENCRYPTED_FS_ROOT)
    write_atomically(mount_point / SALT_FILE, secrets.token_hex(32).encode())
    identifier = fscrypt.add_key(mount_point, derive_key(secret, _salt(mount_point)))
    try:
        data = data_dir(mount_point)
        files.make_dir(data)
        fscrypt.set_policy(data, identifier)
        files.set_mode(data, modes.VOLUME_ROOT if mode is None else mode)
    finally:
        fscrypt.remove_key(mount_point, identifier)


def unlock(mount_point: Path, secret: bytes) -> None:
    """Add the volume's key to the mounted filesystem.

    A secret that does not match the volume's key is refused (FAILED_PRECONDITION) and its
    key removed again, so nothing is created or readable with it.
    """
    data = data_dir(mount_point)
    if not (mount_point / SALT_FILE).exists() or not data.is_dir():
        raise FailedPrecondition(
            "this volume has no encrypted data directory; it was not made encrypted"
        )
    identifier = fscrypt.add_key(mount_point, derive_key(secret, _salt(mount_point)))
    try:
        if fscrypt.policy_identifier(data) != identifier:
            raise FailedPrecondition(WRONG_KEY)
    except BaseException:
        fscrypt.remove_key(mount_point, identifier)
        raise


def _salt(mount_point: Path) -> bytes:
    try:
        return bytes.fromhex(files.read_text(mount_point / SALT_FILE).strip())
    except ValueError:
        raise FailedPrecondition("the volume's encryption salt is damaged") from None


def lock(mount_point: Path) -> None:
    """Remove the volume's key: its files are ciphertext again once unmounted."""
    data = data_dir(mount_point)
    if not data.exists():
        return
    identifier = fscrypt.policy_identifier(data)
    if identifier is not None:
        fscrypt.remove_key(mount_point, identifier)
