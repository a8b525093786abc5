"""Every adverse condition the driver reports, in one table.

A condition is something wrong that the driver can see on the host: a volume's image gone,
its loop device detached, a mount lost, filesystem errors; or the data root itself missing,
read-only, full, out of loop devices. Each has one row here: the CSI 1.13 type it is reported
as, a stable reason (CamelCase, what tools and alerts match on; never reworded) and the
message a user reads. The same row feeds every answer: ControllerGetVolumeHealth,
ControllerListVolumeHealth, NodeGetVolumeHealth, NodeGetStorageHealth and the CSI 1.12
volume condition that older Kubernetes reads (abnormal plus the message). The README's
table of conditions is this one in prose, and a unit test keeps them in step.

This module holds facts only: `health.py` finds a volume's conditions and
`storage_health.py` the data root's; the services turn them into messages.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


class VolumeStatus(enum.Enum):
    """CSI 1.13 VolumeHealthErrorType, by name (the services map it onto the wire enum)."""

    DEGRADED = "DEGRADED"  # works, with less than it should (read-only, smaller)
    INACCESSIBLE = "INACCESSIBLE"  # the workload cannot reach its data through this path
    DATA_LOSS = "DATA_LOSS"  # data is gone or the filesystem records damage


class StorageStatus(enum.Enum):
    """CSI 1.13 StorageHealthErrorType, by name."""

    STORAGE_DEGRADED = "STORAGE_DEGRADED"  # serves, but new volumes or writes may fail
    STORAGE_UNREACHABLE = "STORAGE_UNREACHABLE"  # the data root cannot be used at all


class Problem(enum.Enum):
    """What the driver can find wrong; the value is the row's key in the tables below."""

    # a volume
    DATA_MISSING = "data-missing"
    LOOP_UNIDENTIFIED = "loop-unidentified"
    LOOP_DETACHED = "loop-detached"
    STAGING_MOUNT_GONE = "staging-mount-gone"
    READ_ONLY_REMOUNT = "read-only-remount"
    TARGET_MOUNT_GONE = "target-mount-gone"
    FILESYSTEM_ERRORS = "filesystem-errors"
    DEVICE_TOO_SMALL = "device-too-small"
    # the data root
    ROOT_MISSING = "root-missing"
    ROOT_READ_ONLY = "root-read-only"
    ROOT_NEARLY_FULL = "root-nearly-full"
    ROOT_FULL = "root-full"
    LOOP_DEVICES_EXHAUSTED = "loop-devices-exhausted"


@dataclass(frozen=True)
class Row:
    status: VolumeStatus | StorageStatus
    reason: str
    template: str  # str.format() fields: the facts `found()` is given


V = VolumeStatus
S = StorageStatus

TABLE: Mapping[Problem, Row] = MappingProxyType(
    {
        Problem.DATA_MISSING: Row(
            V.DATA_LOSS, "VolumeDataMissing", "the volume's {noun} {path} is missing"
        ),
        Problem.LOOP_UNIDENTIFIED: Row(V.INACCESSIBLE, "LoopDeviceUnidentified", "{detail}"),
        Problem.LOOP_DETACHED: Row(
            V.INACCESSIBLE,
            "LoopDeviceDetached",
            "the volume is staged but its loop device is detached",
        ),
        Problem.STAGING_MOUNT_GONE: Row(
            V.INACCESSIBLE, "StagingMountMissing", "the staging mount at {path} is gone"
        ),
        Problem.READ_ONLY_REMOUNT: Row(
            V.DEGRADED,
            "FilesystemReadOnly",
            "the filesystem is mounted read-only (remounted after an error?)",
        ),
        Problem.TARGET_MOUNT_GONE: Row(
            V.INACCESSIBLE,
            "PublishMountMissing",
            "the publish target {path} is no longer mounted",
        ),
        Problem.FILESYSTEM_ERRORS: Row(
            V.DATA_LOSS,
            "FilesystemErrors",
            "the {fs} filesystem has recorded {count} error(s); run fsck",
        ),
        Problem.DEVICE_TOO_SMALL: Row(
            V.DEGRADED,
            "DeviceSmallerThanVolume",
            "the loop device is smaller than the volume; expand it again",
        ),
        Problem.ROOT_MISSING: Row(
            S.STORAGE_UNREACHABLE, "DataRootMissing", "the data root {path} is missing"
        ),
        Problem.ROOT_READ_ONLY: Row(
            S.STORAGE_DEGRADED,
            "DataRootReadOnly",
            "the data root {path} is on a read-only filesystem: no volume can be created",
        ),
        Problem.ROOT_NEARLY_FULL: Row(
            S.STORAGE_DEGRADED,
            "DataRootNearlyFull",
            "the data root {path} is nearly full: {free} of {total} {unit} free",
        ),
        Problem.ROOT_FULL: Row(
            S.STORAGE_DEGRADED,
            "DataRootFull",
            "the data root {path} is full ({unit}): writes to directory volumes and new "
            "volumes fail",
        ),
        Problem.LOOP_DEVICES_EXHAUSTED: Row(
            S.STORAGE_DEGRADED,
            "LoopDevicesExhausted",
            "all {count} loop devices are in use: loop volumes cannot be staged",
        ),
    }
)

# Kubernetes keeps at most this many bytes of a message (pod.status.volumeHealth).
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class Condition:
    """One finding: ``problem`` is None only for the healthy answer."""

    abnormal: bool
    message: str
    problem: Problem | None = None

    @property
    def row(self) -> Row | None:
        return TABLE[self.problem] if self.problem is not None else None


HEALTHY = Condition(False, "volume is healthy")


def found(problem: Problem, **facts: object) -> Condition:
    """The condition ``problem``, its message filled in from ``facts``."""
    message = TABLE[problem].template.format(**facts)
    if len(message.encode()) > MAX_MESSAGE:
        message = message.encode()[: MAX_MESSAGE - 3].decode(errors="ignore") + "..."
    return Condition(True, message, problem)
