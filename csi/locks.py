"""Per-key locks taken without waiting: a second caller gets ABORTED, as CSI asks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from csi.errors import Aborted


class KeyedLocks:
    """A set of held keys; holding is cheap and never blocks on slow work."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: set[str] = set()

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            if key in self._held:
                raise Aborted(f"an operation on {key} is already in progress")
            self._held.add(key)
        try:
            yield
        finally:
            with self._guard:
                self._held.discard(key)

    def is_held(self, key: str) -> bool:
        with self._guard:
            return key in self._held
