"""StorageClass parameters and requested capabilities -> a validated volume spec.

Parameters (all optional):

``volumeType``
    ``loop`` (default): a sparse image file on a loop device, formatted or raw block;
    ``directory``: a plain directory under the data root (size recorded, not enforced).
``fsType`` / ``csi.storage.k8s.io/fstype``
    ``ext4`` (default) or ``xfs``, for loop volumes used as a filesystem.

Other keys under ``csi.storage.k8s.io/`` (PVC metadata added by the provisioner) are
accepted and ignored; any other key is refused so a typo never passes silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from csi.errors import InvalidArgument
from csi.host.mkfs import SUPPORTED_FS
from csi.state.records import AccessType, VolumeKind
from csi.validation import MAX_MAP_BYTES, check_map

PARAM_TYPE = "volumeType"
PARAM_FS = "fsType"
PARAM_FS_K8S = "csi.storage.k8s.io/fstype"
RESERVED_PREFIX = "csi.storage.k8s.io/"
KNOWN = frozenset({PARAM_TYPE, PARAM_FS, PARAM_FS_K8S})
DEFAULT_FS = "ext4"


@dataclass(frozen=True)
class VolumeSpec:
    kind: VolumeKind
    access_type: AccessType
    fs_type: str  # "" unless a formatted loop volume

    def parameters(self) -> dict[str, str]:
        """The normalised parameters recorded with the volume and compared on retries."""
        params = {PARAM_TYPE: self.kind.value}
        if self.fs_type:
            params[PARAM_FS] = self.fs_type
        return params


def check_snapshot_parameters(parameters: Mapping[str, str]) -> None:
    """Snapshots take no parameters of their own; provisioner metadata is ignored."""
    check_map(parameters, "parameters", MAX_MAP_BYTES)
    unknown = sorted(k for k in parameters if not k.startswith(RESERVED_PREFIX))
    if unknown:
        raise InvalidArgument(f"unknown parameter(s): {', '.join(unknown)}")


def parse_spec(
    parameters: Mapping[str, str],
    access_types: Sequence[AccessType],
    requested_fs: Sequence[str],
) -> VolumeSpec:
    """Validate ``parameters`` against what the capabilities ask for."""
    check_map(parameters, "parameters", MAX_MAP_BYTES)
    unknown = sorted(k for k in parameters if k not in KNOWN and not k.startswith(RESERVED_PREFIX))
    if unknown:
        raise InvalidArgument(f"unknown parameter(s): {', '.join(unknown)}")

    kind_text = parameters.get(PARAM_TYPE, VolumeKind.LOOP.value)
    try:
        kind = VolumeKind(kind_text)
    except ValueError:
        raise InvalidArgument(
            f"{PARAM_TYPE} must be one of: {', '.join(k.value for k in VolumeKind)}"
        ) from None

    kinds_of_access = set(access_types)
    if len(kinds_of_access) != 1:
        raise InvalidArgument("volume_capabilities must all be block or all be mount")
    access_type = kinds_of_access.pop()
    if access_type is AccessType.BLOCK and kind is VolumeKind.DIRECTORY:
        raise InvalidArgument("block access needs volumeType=loop")

    fs_choices = {v for v in (parameters.get(PARAM_FS), parameters.get(PARAM_FS_K8S)) if v}
    fs_choices |= {fs for fs in requested_fs if fs}
    if len(fs_choices) > 1:
        raise InvalidArgument(f"conflicting filesystem types: {', '.join(sorted(fs_choices))}")
    fs_type = fs_choices.pop() if fs_choices else ""
    if kind is VolumeKind.DIRECTORY or access_type is AccessType.BLOCK:
        fs_type = ""  # a class's fsType is moot for directories and raw block devices
    else:
        fs_type = fs_type or DEFAULT_FS
        if fs_type not in SUPPORTED_FS:
            raise InvalidArgument(f"fsType must be one of: {', '.join(SUPPORTED_FS)}")
    return VolumeSpec(kind=kind, access_type=access_type, fs_type=fs_type)
