"""Where the driver listens: endpoint strings, and the unix socket files behind them."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def grpc_address(endpoint: str) -> tuple[str, Path | None]:
    """Translate ``unix:///path`` or ``tcp://host:port`` into a gRPC address."""
    if endpoint.startswith("unix://"):
        path = Path(endpoint.removeprefix("unix://"))
        if not path.is_absolute():
            raise ValueError(f"unix endpoint needs an absolute path: {endpoint}")
        return f"unix://{path}", path
    if endpoint.startswith("unix:"):
        path = Path(endpoint.removeprefix("unix:"))
        return f"unix://{path}", path
    if endpoint.startswith("tcp://"):
        return endpoint.removeprefix("tcp://"), None
    raise ValueError(f"endpoint must start with unix:// or tcp://, got {endpoint!r}")


def clear_stale_socket(path: Path) -> None:
    """Remove a socket a previous (killed) process left at ``path``, so it can be bound
    afresh; anything other than a socket there is refused, never removed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ValueError(f"{path} exists and is not a socket; refusing to replace it")
    path.unlink()
