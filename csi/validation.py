"""Checks applied once, at the service edge, to every untrusted request field."""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from csi.errors import InvalidArgument
from csi.layout import Layout
from csi.pb import csi_pb2
from csi.state.records import AccessType

MAX_NAME_BYTES = 128
MAX_PATH_BYTES = 4096
MAX_MAP_BYTES = 4096
MAX_FLAG_BYTES = 1024
MOUNT_OPTION = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.+-]*(=("[^"\x00\n]*"|[^,"\x00\n\\]*))?')

Mode = csi_pb2.VolumeCapability.AccessMode.Mode
SUPPORTED_MODES = frozenset(
    {
        Mode.SINGLE_NODE_WRITER,
        Mode.SINGLE_NODE_READER_ONLY,
        Mode.SINGLE_NODE_SINGLE_WRITER,
        Mode.SINGLE_NODE_MULTI_WRITER,
    }
)
READ_ONLY_MODES = frozenset({Mode.SINGLE_NODE_READER_ONLY})
# The access modes a Kubernetes claim writes, by the CSI mode the provisioner turns them into.
KUBERNETES_MODE = {
    Mode.MULTI_NODE_MULTI_WRITER: "ReadWriteMany",
    Mode.MULTI_NODE_READER_ONLY: "ReadOnlyMany",
}
EXCLUSIVE_MODES = frozenset({Mode.SINGLE_NODE_SINGLE_WRITER})


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def check_name(name: str) -> str:
    """A CreateVolume name: required, at most 128 bytes, no path syntax or control chars."""
    if not name:
        raise InvalidArgument("name is required")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidArgument(f"name is longer than {MAX_NAME_BYTES} bytes")
    if "/" in name or "\\" in name or name in (".", "..") or _has_control(name):
        raise InvalidArgument("name must not contain '/', '\\\\', control characters or be . or ..")
    return name


def check_map(values: Mapping[str, str], what: str, limit: int = MAX_MAP_BYTES) -> None:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in values.items())
    if size > limit:
        raise InvalidArgument(f"{what} exceed {limit} bytes")
    for key, value in values.items():
        if "\x00" in key or "\x00" in value:
            raise InvalidArgument(f"{what} must not contain NUL bytes")


def check_host_path(raw: str, what: str, layout: Layout) -> Path:
    """An absolute, normalised node path outside the data root that is not a symlink."""
    if not raw:
        raise InvalidArgument(f"{what} is required")
    if "\x00" in raw or len(raw.encode("utf-8")) > MAX_PATH_BYTES:
        raise InvalidArgument(f"{what} must be a path without NUL, at most {MAX_PATH_BYTES} bytes")
    if not raw.startswith("/"):
        raise InvalidArgument(f"{what} must be an absolute path")
    if any(part == ".." for part in raw.split("/")):
        raise InvalidArgument(f"{what} must not contain '..'")
    path = Path(os.path.normpath(raw))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InvalidArgument(f"{what} cannot be inspected: {exc.strerror}") from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise InvalidArgument(f"{what} must not be a symbolic link")
    if layout.contains(path):
        raise InvalidArgument(f"{what} must be outside the driver's data directory")
    if layout.holds(path):
        raise InvalidArgument(
            f"{what} must not hold the driver's data directory (a mount there would hide it)"
        )
    return path


def check_volume_path(raw: str) -> None:
    """A volume_path to look up (stats, expansion): present, bounded, no NUL. Whether it is
    one of the volume's paths is for the caller to say (NOT_FOUND)."""
    if not raw:
        raise InvalidArgument("volume_path is required")
    if "\x00" in raw or len(raw.encode("utf-8")) > MAX_PATH_BYTES:
        raise InvalidArgument(
            f"volume_path must be a path without NUL, at most {MAX_PATH_BYTES} bytes"
        )


def check_mount_flags(flags: Iterable[str]) -> list[str]:
    result: list[str] = []
    for flag in flags:
        if len(flag.encode()) > MAX_FLAG_BYTES:
            raise InvalidArgument("a mount flag is too long")
        if not MOUNT_OPTION.fullmatch(flag):
            # One option per flag: a name, optionally =value. A comma would smuggle a second
            # option into `mount -o`; only a quoted value (an SELinux context="a,b") holds one.
            raise InvalidArgument(
                "each of mount_flags must be one option: name or name=value (quote values with ',')"
            )
        result.append(flag)
    return result


@dataclass(frozen=True)
class Capability:
    """One requested volume capability, reduced to what the driver acts on."""

    access_type: AccessType
    mode: int
    fs_type: str
    mount_flags: tuple[str, ...]
    mount_group: str

    @property
    def read_only(self) -> bool:
        return self.mode in READ_ONLY_MODES

    @property
    def exclusive(self) -> bool:
        return self.mode in EXCLUSIVE_MODES


def unsupported_reason(cap: csi_pb2.VolumeCapability) -> str | None:
    """Why the driver cannot serve ``cap``, or None if it can."""
    which = cap.WhichOneof("access_type")
    if which is None:
        return "access_type (block or mount) is required"
    if not cap.HasField("access_mode") or cap.access_mode.mode == Mode.UNKNOWN:
        return "access_mode is required"
    mode = cap.access_mode.mode
    if mode not in Mode.values():
        return f"access mode #{mode} is not a CSI access mode"
    if mode not in SUPPORTED_MODES:
        claimed = KUBERNETES_MODE.get(mode)
        name = str(Mode.Name(mode))
        named = f"{name} ({claimed})" if claimed else name
        return (
            f"access mode {named} is not supported: volumes are local to one node; use "
            "ReadWriteOnce (pods on one node share it) or ReadWriteOncePod"
        )
    return None


def parse_capability(cap: csi_pb2.VolumeCapability) -> Capability:
    reason = unsupported_reason(cap)
    if reason is not None:
        raise InvalidArgument(reason)
    if cap.WhichOneof("access_type") == "block":
        return Capability(AccessType.BLOCK, cap.access_mode.mode, "", (), "")
    mount = cap.mount
    if "\x00" in mount.fs_type or len(mount.fs_type) > 32:
        raise InvalidArgument("fs_type is not valid")
    flags = tuple(check_mount_flags(mount.mount_flags))
    return Capability(
        AccessType.MOUNT, cap.access_mode.mode, mount.fs_type, flags, mount.volume_mount_group
    )


def mismatch(cap: Capability, access_type: AccessType, fs_type: str) -> str | None:
    """Why ``cap`` does not fit a volume made for ``access_type``/``fs_type``, or None."""
    if cap.access_type is not access_type:
        return f"volume was created for {access_type.value} access"
    if cap.fs_type and fs_type and cap.fs_type != fs_type:
        return f"volume holds {fs_type}, not {cap.fs_type}"
    return None


def parse_capabilities(caps: Iterable[csi_pb2.VolumeCapability]) -> list[Capability]:
    parsed = [parse_capability(cap) for cap in caps]
    if not parsed:
        raise InvalidArgument("volume_capabilities is required")
    return parsed


def required_capability(request_has: bool, cap: csi_pb2.VolumeCapability) -> Capability:
    if not request_has:
        raise InvalidArgument("volume_capability is required")
    return parse_capability(cap)
