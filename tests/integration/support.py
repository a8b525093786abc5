"""Integration-tier helpers that no other tier needs: loop devices attached the way a
driver in a container attaches them, and records edited behind a stopped driver.

What the tiers share (the kubelet stand-in, host probes, invariants) is in tests/support.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.support.host import loop_backing_name, sh


def attach_in_a_vanished_namespace(data: Path, relative: str, view: Path) -> str:
    """Attach ``data/relative`` the way a driver container did: from its own mount
    namespace, through a private bind mount of ``data`` at ``view``. The namespace (and the
    bind) end with the command; the device stays."""
    view.mkdir(parents=True, exist_ok=True)
    script = 'mount --bind -- "$1" "$2" && exec losetup --find --show -- "$2/$3"'
    argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]
    done = sh(*argv, "sh", str(data), str(view), relative)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def wait_for_backing_name(device: str, wanted: str, timeout: float = 5.0) -> str:
    """The namespace is torn down just after its last process exits; wait for its mounts."""
    deadline = time.monotonic() + timeout
    while (name := loop_backing_name(device)) != wanted and time.monotonic() < deadline:
        time.sleep(0.02)
    return name


def record_growth_behind_the_driver(data_dir: Path, volume_id: str, size: int) -> None:
    """What a growth recorded but never finished on the host leaves: a record whose size
    the image lacks (the driver is stopped; it reads records at start-up)."""
    path = data_dir / "state" / "volumes" / f"{volume_id}.json"
    record = json.loads(path.read_text())
    record["capacity_bytes"] = size
    path.write_text(json.dumps(record))
