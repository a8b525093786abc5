"""Start-up gate: the driver serves Controller and Node calls only once reconciled.

Also the one rule for "is this driver ready", shared by the Identity Probe and the HTTP
health endpoint: ``fault`` (cannot serve at all: Probe fails) and ``not_ready`` (Probe
would not say ready=true, for whatever reason).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from csi.errors import Unavailable
from csi.host.run import missing_tools
from csi.host.tools import ESSENTIAL_TOOLS

STILL_RECONCILING = "the driver is still reconciling its state"


class Readiness:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._failure: str | None = None

    def mark_ready(self) -> None:
        self._event.set()

    def mark_failed(self, reason: str) -> None:
        self._failure = reason

    @property
    def ready(self) -> bool:
        return self._event.is_set()

    @property
    def failure(self) -> str | None:
        return self._failure

    def require(self, timeout: float = 10.0) -> None:
        if not self._event.wait(timeout):
            raise Unavailable(self._failure or STILL_RECONCILING)


def fault(readiness: Readiness, data_dir: Path) -> str | None:
    """Why the driver cannot serve volumes at all (start-up failed, data directory not
    writable, essential host tools missing), or None."""
    if readiness.failure:
        return f"start-up failed: {readiness.failure}"
    if not os.access(data_dir, os.W_OK | os.X_OK):
        return f"data directory {data_dir} is not writable"
    missing = missing_tools(ESSENTIAL_TOOLS)
    if missing:
        return f"host tools missing: {', '.join(missing)}"
    return None


def not_ready(readiness: Readiness, data_dir: Path) -> str | None:
    """Why Probe would not answer ready=true, or None when it would."""
    return fault(readiness, data_dir) or (None if readiness.ready else STILL_RECONCILING)
