"""Typed errors raised by the driver's own rules; ``csi.status`` gives each its status code.

The tree (with the code each one becomes)::

    CsiError                  (never raised directly)
    +-- InvalidArgument       INVALID_ARGUMENT    a request field is missing or malformed
    +-- NotFound              NOT_FOUND           the volume (or path) does not exist
    +-- AlreadyExists         ALREADY_EXISTS      same name, incompatible request
    +-- FailedPrecondition    FAILED_PRECONDITION volume in use, host not ready, wrong state
    +-- Aborted               ABORTED             another operation holds the volume; bad token
    +-- OutOfRange            OUT_OF_RANGE        a size beyond what the driver supports
    +-- ResourceExhausted     RESOURCE_EXHAUSTED  no space, volume limit, topology unreachable
    +-- Unavailable           UNAVAILABLE         the driver is still starting up
    +-- Internal              INTERNAL            the driver cannot do what it should

What the host reports (a tool that failed, a full disk) has its own tree in
``csi.host.errors``. Messages are shown to the caller: they must be short, clear and free of
secrets.
"""

from __future__ import annotations


class CsiError(Exception):
    """Base class; ``message`` is what the caller reads."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(CsiError):
    pass


class NotFound(CsiError):
    pass


class AlreadyExists(CsiError):
    pass


class FailedPrecondition(CsiError):
    pass


class Aborted(CsiError):
    pass


class OutOfRange(CsiError):
    pass


class ResourceExhausted(CsiError):
    pass


class Unavailable(CsiError):
    pass


class Internal(CsiError):
    pass
