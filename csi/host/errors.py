"""What can go wrong on the host, in the host's own terms (no gRPC, no CSI).

The tree::

    HostError                      (never raised directly)
    +-- CommandError               a host program could not do its job; ``tool`` names it
    |   +-- CommandFailed          it exited with an unexpected code (``returncode``, ``stderr``)
    |   |   +-- NoSpace            ... because the disk was full
    |   +-- ToolMissing            it is not installed
    |   +-- CommandTimedOut        it ran past its own cap and was killed
    |       +-- DeadlineReached    it ran past the deadline of the call it served, and was killed
    +-- SyscallFailed              a system call refused (``step`` names it, ``errno`` why)
    |   +-- MountFailed            mount(2): a filesystem, a bind, a remount, a propagation
    |   |   +-- MountOptionsRefused    ... EINVAL while the caller's filesystem options were
    |   |                              passed: the kernel (or the filesystem) refused them
    |   +-- UnmountFailed          umount2(2)
    |   +-- IoctlFailed            an ioctl: fscrypt keys and policies, freeze and thaw, FIEMAP,
    |       |                      FICLONE
    |       +-- LoopFailed         a loop-control or loop-device ioctl (or the open it needs)
    +-- InvalidMountOption         a mount option this mount cannot apply, refused before any call
    +-- MountPointUnusable         a publish target that cannot be made or is not what it should be
    +-- LoopDeviceUnreadable       an attached loop device whose backing file cannot be told
    +-- FormatRefused              mkfs asked to format something that already holds a signature
    +-- UnsupportedFilesystem      a filesystem type this host layer does not make or grow
    +-- GrowNeedsPrivilege         online ext4 growth without CAP_SYS_RESOURCE
    +-- KeyMismatch                a directory encrypted under another fscrypt policy or key
    +-- ExtentsUnavailable         the filesystem cannot map a file's extents (no FIEMAP)

``message`` is safe to show a caller: stderr is already stripped of the strings the caller
marked sensitive. Which status code each one becomes is decided once, in ``csi.status``.
"""

from __future__ import annotations


class HostError(Exception):
    """Base class; ``message`` says what failed, without secrets."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CommandError(HostError):
    def __init__(self, message: str, *, tool: str) -> None:
        super().__init__(message)
        self.tool = tool


class CommandFailed(CommandError):
    def __init__(self, message: str, *, tool: str, returncode: int, stderr: str = "") -> None:
        super().__init__(message, tool=tool)
        self.returncode = returncode
        self.stderr = stderr


class NoSpace(CommandFailed):
    """The tool reported "No space left on device"."""


class ToolMissing(CommandError):
    pass


class CommandTimedOut(CommandError):
    def __init__(self, message: str, *, tool: str, seconds: float) -> None:
        super().__init__(message, tool=tool)
        self.seconds = seconds


class DeadlineReached(CommandTimedOut):
    """The call's caller stopped waiting; the command was killed rather than left running."""


class SyscallFailed(HostError):
    """A system call of ``csi.host.kernel`` failed; ``errno`` is the kernel's reason and
    ``step`` the seam's name for the call (``mount:bind``, ``loop:configure``,
    ``freeze:thaw``...)."""

    def __init__(self, message: str, *, step: str, errno: int) -> None:
        super().__init__(message)
        self.step = step
        self.errno = errno


class MountFailed(SyscallFailed):
    pass


class MountOptionsRefused(MountFailed):
    """EINVAL from mount(2) with filesystem options from the caller: most likely an option
    the filesystem does not know or a value it does not accept."""


class UnmountFailed(SyscallFailed):
    pass


class IoctlFailed(SyscallFailed):
    """An ioctl(2) refused; a caller that has a use for some errno (EINVAL from FITHAW: not
    frozen) tests ``errno`` rather than catching an OSError."""


class LoopFailed(IoctlFailed):
    pass


class InvalidMountOption(HostError):
    """A mount option that is neither a flag this mount applies nor filesystem data it can
    pass on (a bind mount carries no filesystem options): refused before anything changes.
    The message names the option by position only: option values may be secrets."""


class LoopDeviceUnreadable(HostError):
    """An attached loop device whose backing file cannot be identified: the driver will
    not guess whether it is a volume's, so the lookup fails instead."""


class FormatRefused(HostError):
    """The target already holds a filesystem or another signature: never formatted over."""


class UnsupportedFilesystem(HostError):
    pass


class GrowNeedsPrivilege(HostError):
    pass


class KeyMismatch(HostError):
    """The directory is encrypted with another key or policy version."""


class ExtentsUnavailable(HostError):
    """The filesystem cannot say where a file's extents are (no FIEMAP); callers fall back
    to reading the data."""


class MountPointUnusable(HostError):
    """A mount point that cannot be made, or is not the kind (or empty) it must be."""
