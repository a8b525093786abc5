"""Crash points for the reliability tests: off unless CSI_FAULT_POINT names one.

``crash_point("create:formatted")`` kills the process with SIGKILL right there when the
driver was started with CSI_FAULT_POINT=create:formatted, so a test can prove that a restart
and a retry converge from every step of every multi-step operation. Production runs never set
the variable; the check is one string comparison.
"""

from __future__ import annotations

import os
import signal

ENV = "CSI_FAULT_POINT"
POINTS = frozenset(
    {
        "create:record",
        "create:image",
        "create:set-up",
        "create:formatted",
        "create:renamed",
        "stage:record",
        "stage:attached",
        "stage:mounted",
        "publish:record",
        "publish:mounted",
        "expand:grown",
        "snapshot:record",
        "snapshot:copied",
        "unpublish:unmounted",
        "unstage:unmounted",
        "unstage:detached",
        "delete:unused",
        "delete:marked",
        "delete:removed",
    }
)
_SELECTED = os.environ.get(ENV, "")


def crash_point(name: str) -> None:
    """Die here, without any clean-up, if this is the selected crash point."""
    if name == _SELECTED:
        os.kill(os.getpid(), signal.SIGKILL)
