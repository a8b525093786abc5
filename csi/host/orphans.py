"""Host tools a killed driver left running, found and stopped before a new one starts work.

Every command the driver forks (csi.host.run) carries ``LOCALVOL_TOOL_OWNER`` in its
environment: this driver's node and data root. A SIGKILL does not reach those children:
an ``mkfs``, ``e2fsck`` or ``resize2fs`` goes on writing its image or device after the
driver is gone. If the restarted driver attached and mounted that volume meanwhile, two
writers would share one filesystem. So start-up, before reconciliation touches anything,
kills every process that carries this driver's mark and waits until each one is gone. The
mark names the node and the data root, so a driver never stops another node's tools (the
nodes of a kind cluster share one kernel). Inside a container without the host's PID
namespace the kernel already ended them with the driver; the pass then finds none.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_ENV = "LOCALVOL_TOOL_OWNER"
PROC = Path("/proc")
GONE_WAIT = 10.0  # a SIGKILLed process in uninterruptible I/O may take a moment to go


def owner_mark(node_id: str, data_root: Path) -> str:
    return f"{node_id}:{data_root}"


def marked(owner: str, proc: Path = PROC) -> list[int]:
    """The processes (other than this one) whose environment carries ``owner``'s mark."""
    wanted = f"{OWNER_ENV}={owner}".encode()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or a kernel thread
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def stop_orphans(owner: str, proc: Path = PROC) -> list[int]:
    """Kill the processes carrying ``owner``'s mark and wait until they are gone; their
    PIDs. Raises TimeoutError if one outlives GONE_WAIT (work must not start then)."""
    killed = marked(owner, proc)
    for pid in killed:
        log.warning("event=orphan_tool_killed pid=%d tool=%s", pid, _comm(proc, pid))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + GONE_WAIT
    while left := [p for p in killed if not _gone(proc, p)]:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"tools of an earlier driver still running: {left}")
        time.sleep(0.01)
    return killed


def _comm(proc: Path, pid: int) -> str:
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def _gone(proc: Path, pid: int) -> bool:
    """Exited (a zombie waiting for its new parent's wait counts: it writes nothing)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"
