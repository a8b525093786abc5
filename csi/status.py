"""The one table from what went wrong to the status code and message a caller receives.

Domain errors (``csi.errors``), host errors (``csi.host.errors``; a failed system call also
by its errno), the OS errors a full disk raises, and ``NotImplementedError`` each have an
entry; an exception is looked up by its
class, then by each base class in turn, so a subclass may have an entry of its own (a tool
that ran out of space is RESOURCE_EXHAUSTED, other tool failures INTERNAL). Anything else is
unexpected: INTERNAL with a reference to the log line that holds its traceback, never the
exception's own text (it may hold a path or a secret).
"""

from __future__ import annotations

import errno
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import grpc

from csi import errors
from csi.host import errors as host

Code = grpc.StatusCode

STATUS_OF: Mapping[type[BaseException], grpc.StatusCode] = MappingProxyType(
    {
        errors.InvalidArgument: Code.INVALID_ARGUMENT,
        errors.NotFound: Code.NOT_FOUND,
        errors.AlreadyExists: Code.ALREADY_EXISTS,
        errors.FailedPrecondition: Code.FAILED_PRECONDITION,
        errors.Aborted: Code.ABORTED,
        errors.OutOfRange: Code.OUT_OF_RANGE,
        errors.ResourceExhausted: Code.RESOURCE_EXHAUSTED,
        errors.Unavailable: Code.UNAVAILABLE,
        errors.Internal: Code.INTERNAL,
        errors.CsiError: Code.INTERNAL,
        # The host: a tool's failure is the driver's, shown with the tool's redacted complaint.
        host.CommandFailed: Code.INTERNAL,
        host.NoSpace: Code.RESOURCE_EXHAUSTED,
        host.ToolMissing: Code.INTERNAL,
        host.CommandTimedOut: Code.INTERNAL,
        host.DeadlineReached: Code.DEADLINE_EXCEEDED,
        host.CommandError: Code.INTERNAL,
        # A system call that failed: the driver's failure, with the kernel's reason; by
        # errno below where the reason is the host's state or the caller's input.
        host.SyscallFailed: Code.INTERNAL,
        host.MountFailed: Code.INTERNAL,
        host.UnmountFailed: Code.INTERNAL,
        host.IoctlFailed: Code.INTERNAL,
        host.LoopFailed: Code.INTERNAL,
        host.MountOptionsRefused: Code.INVALID_ARGUMENT,
        host.InvalidMountOption: Code.INVALID_ARGUMENT,
        host.LoopDeviceUnreadable: Code.INTERNAL,
        host.FormatRefused: Code.FAILED_PRECONDITION,
        host.MountPointUnusable: Code.FAILED_PRECONDITION,
        host.UnsupportedFilesystem: Code.FAILED_PRECONDITION,
        host.GrowNeedsPrivilege: Code.FAILED_PRECONDITION,
        host.KeyMismatch: Code.FAILED_PRECONDITION,
        host.ExtentsUnavailable: Code.FAILED_PRECONDITION,  # caught: a read replaces it
        host.HostError: Code.INTERNAL,
        NotImplementedError: Code.UNIMPLEMENTED,
    }
)

NO_SPACE = "no space left in the driver's data directory"
# OSErrors that are the host's state rather than the driver's fault, by errno.
ERRNO_STATUS: Mapping[int, tuple[grpc.StatusCode, str]] = MappingProxyType(
    {
        errno.ENOSPC: (Code.RESOURCE_EXHAUSTED, NO_SPACE),
        errno.EDQUOT: (Code.RESOURCE_EXHAUSTED, NO_SPACE),
    }
)


# A failed system call whose errno says more than "the driver failed".
SYSCALL_ERRNO_STATUS: Mapping[int, grpc.StatusCode] = MappingProxyType(
    {
        errno.ENOSPC: Code.RESOURCE_EXHAUSTED,  # a full disk (a clone), a mount or loop limit
        errno.EDQUOT: Code.RESOURCE_EXHAUSTED,
        errno.EBUSY: Code.FAILED_PRECONDITION,  # in use (unmount or detach it), or frozen
    }
)


@dataclass(frozen=True)
class Failure:
    """How a call ends: ``ref`` is set when the error was unexpected (log its traceback)."""

    code: grpc.StatusCode
    message: str
    ref: str | None = None


def _errno_rule(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    if isinstance(exc, OSError) and exc.errno is not None:
        return ERRNO_STATUS.get(exc.errno)
    return None


def _syscall_code(exc: BaseException) -> grpc.StatusCode | None:
    if isinstance(exc, host.SyscallFailed) and not isinstance(exc, host.MountOptionsRefused):
        return SYSCALL_ERRNO_STATUS.get(exc.errno)
    return None


def code_of(exc: BaseException) -> grpc.StatusCode | None:
    """The code the table gives ``exc`` (None if it is unexpected)."""
    rule = _errno_rule(exc)
    if rule is not None:
        return rule[0]
    by_errno = _syscall_code(exc)
    if by_errno is not None:
        return by_errno
    for cls in type(exc).__mro__:
        code = STATUS_OF.get(cls)
        if code is not None:
            return code
    return None


def failure_of(exc: BaseException, method: str) -> Failure:
    """The code and caller-facing message for ``exc``, raised while serving ``method``."""
    code = code_of(exc)
    if code is None:
        ref = uuid.uuid4().hex[:12]
        return Failure(Code.INTERNAL, f"internal error (ref {ref}); see driver log", ref)
    rule = _errno_rule(exc)
    if rule is not None:
        return Failure(*rule)
    if isinstance(exc, errors.CsiError | host.HostError):
        return Failure(code, exc.message)
    if isinstance(exc, NotImplementedError):
        return Failure(code, f"{method} is not implemented")
    return Failure(code, code.name.lower().replace("_", " "))
