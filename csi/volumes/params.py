"""StorageClass parameters and requested capabilities -> a validated volume spec.

Parameters (all optional):

``volumeType``
    ``loop`` (default): a sparse image file on a loop device, formatted or raw block;
    ``directory``: a plain directory under the data root (size recorded, not enforced).
``fsType`` / ``csi.storage.k8s.io/fstype``
    ``ext4`` (default) or ``xfs``, for loop volumes used as a filesystem.
``encryption``
    ``fscrypt``: encrypt the volume's files at rest with ext4's native encryption, keyed by
    the ``encryptionKey`` CSI secret (see csi.volumes.encryption); ``none`` (default).
``mode``
    octal permissions of a new volume's root directory, e.g. ``0770``.
``allowedMountOptions``
    comma-separated option names; mount flags outside it are refused.

Other keys under ``csi.storage.k8s.io/`` (PVC metadata added by the provisioner) are
accepted and ignored; any other key is refused so a typo never passes silently.

Every refusal here is worded for the person who wrote the StorageClass or the claim (the
provisioner shows it in the claim's ProvisioningFailed event, the kubelet in the pod's
FailedMount event): what is wrong, and what to write instead, with the closest known name
when a key or value looks misspelt.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence

from csi.errors import InvalidArgument
from csi.host.mkfs import SUPPORTED_FS
from csi.state.records import AccessType, VolumeKind, VolumeSpec
from csi.validation import MAX_MAP_BYTES, check_map

PARAM_TYPE = "volumeType"
PARAM_FS = "fsType"
PARAM_FS_K8S = "csi.storage.k8s.io/fstype"
PARAM_ENCRYPTION = "encryption"
PARAM_MODE = "mode"
PARAM_ALLOWED_OPTIONS = "allowedMountOptions"
ENCRYPTION_FSCRYPT = "fscrypt"
RESERVED_PREFIX = "csi.storage.k8s.io/"
# What the provisioner adds (--extra-create-metadata): the claim a volume is made for.
PARAM_PVC_NAMESPACE = f"{RESERVED_PREFIX}pvc/namespace"
PARAM_PVC_NAME = f"{RESERVED_PREFIX}pvc/name"
# A claim's namespace (a DNS label) and name (a DNS subdomain), as the API accepts them.
OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
KNOWN = frozenset(
    {PARAM_TYPE, PARAM_FS, PARAM_FS_K8S, PARAM_ENCRYPTION, PARAM_MODE, PARAM_ALLOWED_OPTIONS}
)
OPTION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
MODE_TEXT = re.compile(r"0?[0-7]{3,4}")
DEFAULT_FS = "ext4"
BLOCK_CLASS_EXAMPLE = "localvol-block"  # deploy/base/storageclasses.yaml
# StorageClass parameters cannot be updated in place (the API server forbids it).
CLASS_FIX = "fix the StorageClass (delete and re-create it: its parameters cannot be edited)"


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` most likely misspells, case aside (difflib's ratio), or None."""
    by_lower = {c.lower(): c for c in choices}
    found = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[found[0]] if found else None


def _quoted(word: str, choices: Iterable[str]) -> str:
    """``"word"``, followed by the closest choice when one looks meant."""
    match = closest(word, choices)
    hint = f' (did you mean "{match}"?)' if match is not None and match != word else ""
    return f'"{word}"{hint}'


def unknown_parameters_message(unknown: Sequence[str], known: Iterable[str]) -> str:
    """The refusal of parameter keys the driver does not know, each with its likely meaning."""
    known = sorted(known)
    noun = "parameter" if len(unknown) == 1 else "parameters"
    named = ", ".join(_quoted(k, known) for k in unknown)
    if not known:
        return f"unknown {noun} {named}: this driver takes none here; remove them"
    return f"unknown {noun} {named}; known: {', '.join(known)}; {CLASS_FIX}"


def unsupported_value_message(key: str, value: str, supported: Sequence[str]) -> str:
    """The refusal of a parameter value outside ``supported``, with the likely meaning."""
    return f"{key} {_quoted(value, supported)} is not supported; supported: {', '.join(supported)}"


def volume_context(spec: VolumeSpec) -> dict[str, str]:
    """The spec as normalised parameters: the volume context a CreateVolume reply carries
    (what a Kubernetes PV shows in ``volumeAttributes``)."""
    params = {PARAM_TYPE: spec.kind.value}
    if spec.fs_type:
        params[PARAM_FS] = spec.fs_type
    if spec.encrypted:
        params[PARAM_ENCRYPTION] = ENCRYPTION_FSCRYPT
    if spec.mode is not None:
        params[PARAM_MODE] = f"{spec.mode:04o}"
    if spec.allowed_mount_options:
        params[PARAM_ALLOWED_OPTIONS] = ",".join(spec.allowed_mount_options)
    return params


def check_mount_options_allowed(spec: VolumeSpec, flags: Sequence[str]) -> None:
    """Refuse mount flags the volume's StorageClass does not list (when it lists any): at
    CreateVolume (the class's mountOptions, so nothing is made) and at every stage and
    publish (the PV's mountOptions, which can be edited after the volume was made)."""
    if not spec.allowed_mount_options:
        return
    refused = sorted({f.split("=", 1)[0] for f in flags} - set(spec.allowed_mount_options))
    if refused:
        noun = "option" if len(refused) == 1 else "options"
        raise InvalidArgument(
            f"mount {noun} {', '.join(refused)} not allowed: the StorageClass's "
            f"{PARAM_ALLOWED_OPTIONS} parameter allows only "
            f"{', '.join(spec.allowed_mount_options)}; remove {', '.join(refused)} from the "
            f"mountOptions of the StorageClass (and of the PV, for a volume already made), or "
            f"use a class whose {PARAM_ALLOWED_OPTIONS} lists them (a volume keeps the list "
            "it was created with)"
        )


def check_snapshot_parameters(parameters: Mapping[str, str]) -> None:
    """Snapshots take no parameters of their own; provisioner metadata is ignored."""
    check_map(parameters, "parameters", MAX_MAP_BYTES)
    unknown = sorted(k for k in parameters if not k.startswith(RESERVED_PREFIX))
    if unknown:
        raise InvalidArgument(unknown_parameters_message(unknown, ()))


def parse_spec(
    parameters: Mapping[str, str],
    access_types: Sequence[AccessType],
    requested_fs: Sequence[str],
) -> VolumeSpec:
    """Validate ``parameters`` against what the capabilities ask for."""
    check_map(parameters, "parameters", MAX_MAP_BYTES)
    unknown = sorted(k for k in parameters if k not in KNOWN and not k.startswith(RESERVED_PREFIX))
    if unknown:
        raise InvalidArgument(unknown_parameters_message(unknown, KNOWN))

    kind_text = parameters.get(PARAM_TYPE, VolumeKind.LOOP.value)
    try:
        kind = VolumeKind(kind_text)
    except ValueError:
        kinds = [k.value for k in VolumeKind]
        raise InvalidArgument(
            f"{unsupported_value_message(PARAM_TYPE, kind_text, kinds)}; {CLASS_FIX}"
        ) from None

    kinds_of_access = set(access_types)
    if len(kinds_of_access) != 1:
        raise InvalidArgument("volume_capabilities must all be block or all be mount")
    access_type = kinds_of_access.pop()
    if access_type is AccessType.BLOCK and kind is VolumeKind.DIRECTORY:
        raise InvalidArgument(
            f"block access (volumeMode: Block) needs a loop volume, and this StorageClass "
            f"has {PARAM_TYPE}={kind.value}; use a class with {PARAM_TYPE}=loop for raw "
            f"block claims (e.g. {BLOCK_CLASS_EXAMPLE}), or volumeMode: Filesystem"
        )

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
            raise InvalidArgument(
                f"{unsupported_value_message(PARAM_FS, fs_type, SUPPORTED_FS)} (the "
                f"StorageClass's {PARAM_FS} or {PARAM_FS_K8S} parameter, or the PV's fsType)"
            )
    return VolumeSpec(
        kind=kind,
        access_type=access_type,
        fs_type=fs_type,
        encrypted=_encryption(parameters, kind, access_type, fs_type),
        mode=_mode(parameters),
        allowed_mount_options=_allowed_options(parameters),
    )


def _encryption(
    parameters: Mapping[str, str], kind: VolumeKind, access_type: AccessType, fs_type: str
) -> bool:
    value = parameters.get(PARAM_ENCRYPTION, "")
    if value in ("", "none"):
        return False
    if value != ENCRYPTION_FSCRYPT:
        raise InvalidArgument(f"{PARAM_ENCRYPTION} must be {ENCRYPTION_FSCRYPT} or none")
    if kind is not VolumeKind.LOOP or access_type is not AccessType.MOUNT or fs_type != "ext4":
        raise InvalidArgument(
            f"{PARAM_ENCRYPTION}={ENCRYPTION_FSCRYPT} needs a loop volume with an ext4 filesystem "
            "(ext4's native encryption; xfs, raw block and directory volumes have none here)"
        )
    return True


def _mode(parameters: Mapping[str, str]) -> int | None:
    text = parameters.get(PARAM_MODE)
    if text is None:
        return None
    if not MODE_TEXT.fullmatch(text):
        raise InvalidArgument(f"{PARAM_MODE} must be octal permissions such as 0770")
    mode = int(text, 8)
    if mode > 0o7777:
        raise InvalidArgument(f"{PARAM_MODE} must be at most 7777")
    return mode


def _allowed_options(parameters: Mapping[str, str]) -> tuple[str, ...]:
    text = parameters.get(PARAM_ALLOWED_OPTIONS)
    if text is None:
        return ()
    names = tuple(sorted({n.strip() for n in text.split(",") if n.strip()}))
    if not names or not all(OPTION_NAME.fullmatch(n) for n in names):
        raise InvalidArgument(f"{PARAM_ALLOWED_OPTIONS} must be a comma-separated list of names")
    return names


def claim_of(parameters: Mapping[str, str]) -> tuple[str, str] | None:
    """The namespace and name of the claim the provisioner makes a volume for, when it says
    (and they are names the API could hold); None otherwise."""
    namespace = parameters.get(PARAM_PVC_NAMESPACE, "")
    name = parameters.get(PARAM_PVC_NAME, "")
    if len(namespace) > 63 or "." in namespace:
        return None
    if OBJECT_NAME.fullmatch(namespace) and OBJECT_NAME.fullmatch(name):
        return namespace, name
    return None
