"""Typed errors raised by the driver; one interceptor turns them into gRPC status codes.

The tree::

    CsiError                  (never raised directly)
    +-- InvalidArgument       INVALID_ARGUMENT    a request field is missing or malformed
    +-- NotFound              NOT_FOUND           the volume (or path) does not exist
    +-- AlreadyExists         ALREADY_EXISTS      same name, incompatible request
    +-- FailedPrecondition    FAILED_PRECONDITION volume in use, host not ready, wrong state
    +-- Aborted               ABORTED             another operation holds the volume; bad token
    +-- OutOfRange            OUT_OF_RANGE        a size beyond what the driver supports
    +-- ResourceExhausted     RESOURCE_EXHAUSTED  no space, volume limit, topology unreachable
    +-- Unavailable           UNAVAILABLE         the driver is still starting up
    +-- Internal              INTERNAL            a host tool or system call failed

Messages are shown to the caller: they must be short, clear and free of secrets.
"""

from __future__ import annotations

import grpc


class CsiError(Exception):
    """Base class; ``code`` is the gRPC status the caller receives."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(CsiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(CsiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CsiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(CsiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(CsiError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(CsiError):
    code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhausted(CsiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(CsiError):
    code = grpc.StatusCode.UNAVAILABLE


class Internal(CsiError):
    code = grpc.StatusCode.INTERNAL
