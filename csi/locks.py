"""Per-key locks. A CSI call takes its key without waiting: a second caller gets ABORTED,
as CSI asks (the orchestrator retries). A Docker or Podman call waits its turn for a
bounded time, as those callers never retry a plugin call."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from csi.errors import Aborted


class KeyedLocks:
    """A set of held keys; holding is cheap and never blocks on slow work unless asked to."""

    def __init__(self) -> None:
        self._guard = threading.Condition(threading.Lock())
        self._held: set[str] = set()

    @contextmanager
    def hold(self, key: str, *, wait: float = 0.0) -> Iterator[None]:
        """Hold ``key``; if it is held, wait up to ``wait`` seconds for it, then ABORTED."""
        deadline = time.monotonic() + wait
        with self._guard:
            while key in self._held:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Aborted(f"an operation on {key} is already in progress")
                self._guard.wait(left)
            self._held.add(key)
        try:
            yield
        finally:
            with self._guard:
                self._held.discard(key)
                self._guard.notify_all()

    def is_held(self, key: str) -> bool:
        with self._guard:
            return key in self._held
