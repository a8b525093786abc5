"""Where the driver listens: endpoint strings, and the unix socket files behind them."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from csi.host import modes


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


@contextlib.contextmanager
def bound_privately(path: Path) -> Iterator[None]:
    """Around the bind of a unix socket at ``path``: its directory made (0700) if missing, a
    stale socket removed, and the umask narrowed so the socket is root's alone from the
    first instant (the kubelet, the sidecars and Docker connect as root); once bound its
    mode is set once more, for a filesystem that ignores the umask. An existing directory is
    left as it is: it may be shared (the kubelet's plugin registry, /run/docker/plugins)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=modes.PRIVATE_DIR)
    clear_stale_socket(path)
    old_umask = os.umask(modes.SOCKET_UMASK)
    try:
        yield
    finally:
        os.umask(old_umask)
    os.chmod(path, modes.SOCKET)


# What every gRPC listener of the driver allows a client (the CSI socket, the kubelet's
# registration socket): connections held at once, the size of a message and of its
# metadata, calls at once on one connection; an idle connection is closed (a client
# reconnects on its own). Calls beyond ``MAX_CONCURRENT_RPCS`` are refused at once with
# RESOURCE_EXHAUSTED rather than queued without end.
GRPC_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_allowed_incoming_connections", 64),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_metadata_size", 16 * 1024),
    ("grpc.max_concurrent_streams", 32),
    ("grpc.max_connection_idle_ms", 5 * 60 * 1000),
)
MAX_CONCURRENT_RPCS = 256
