"""The deadline of the call being served, for the commands it runs.

The interceptor opens ``call_deadline(context.time_remaining())`` around each RPC; ``run()``
asks ``remaining()`` before it forks. A context variable carries it, so no layer between
the two needs a parameter for it. Code that runs outside an RPC (start-up reconciliation,
tools) has no deadline, and commands there keep only their own caps.

Threads do not inherit it: work an RPC hands to another thread has no deadline there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# Absolute time.monotonic() by which the current call must end, or None.
_DEADLINE: ContextVar[float | None] = ContextVar("csi_call_deadline", default=None)


@contextmanager
def call_deadline(seconds: float | None) -> Iterator[None]:
    """Commands run inside this block must end within ``seconds`` from now (None: no bound)."""
    token = _DEADLINE.set(None if seconds is None else time.monotonic() + max(seconds, 0.0))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds left before the current call's deadline (negative once past), or None."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()
