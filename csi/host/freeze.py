"""Freeze a mounted filesystem for a consistent copy (FIFREEZE/FITHAW, no fork)."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878


def thaw(mount_point: str) -> bool:
    """Thaw ``mount_point`` if it is frozen (a crash while frozen leaves it so); True if it was."""
    fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FITHAW, 0)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # not frozen
            return False
        raise
    finally:
        os.close(fd)
    return True


@contextmanager
def frozen(mount_points: Sequence[str]) -> Iterator[None]:
    """Freeze every mount point (in order), yield, then thaw them all, even on error."""
    with ExitStack() as stack:
        for mount_point in dict.fromkeys(mount_points):
            fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            stack.callback(os.close, fd)
            fcntl.ioctl(fd, FIFREEZE, 0)
            stack.callback(fcntl.ioctl, fd, FITHAW, 0)
        yield
