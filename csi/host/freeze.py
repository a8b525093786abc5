"""Freeze a mounted filesystem for a consistent copy (FIFREEZE/FITHAW, no fork), each a
step of csi.host.kernel (``freeze:freeze``, ``freeze:thaw``)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

from csi.host import kernel
from csi.host.errors import IoctlFailed

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878


def thaw(mount_point: str) -> bool:
    """Thaw ``mount_point`` if it is frozen (a crash while frozen leaves it so); True if it was.
    OSError if it cannot be opened, IoctlFailed if the thaw fails."""
    fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        kernel.ioctl("freeze:thaw", fd, FITHAW, where=mount_point)
    except IoctlFailed as failed:
        if failed.errno == errno.EINVAL:  # not frozen
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
            kernel.ioctl("freeze:freeze", fd, FIFREEZE, where=mount_point)
            stack.callback(kernel.ioctl, "freeze:thaw", fd, FITHAW, where=mount_point)
        yield
