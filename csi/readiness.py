"""Start-up gate: the driver serves Controller and Node calls only once reconciled."""

from __future__ import annotations

import threading

from csi.errors import Unavailable


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
            raise Unavailable(self._failure or "the driver is still reconciling its state")
