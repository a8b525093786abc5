"""What the test cluster leaves on this machine: loop devices, mounts, processes, sysctls,
iptables chains. The node is this machine, so these are read here directly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from csi.host import loopdev
from csi.host.mount import read_mounts
from tests.e2e.cluster import CLUSTER_DIR, CLUSTER_RUN

# Every place the cluster mounts something or keeps a file.
CLUSTER_PATHS = (Path("/var/lib/kubelet"), CLUSTER_DIR, CLUSTER_RUN)


def loop_devices_on(image: str | Path) -> list[str]:
    """Loop devices attached to ``image``, found by its inode (dying ones included)."""
    wanted = loopdev.FileId.of(image)
    return sorted(d.path for d in loopdev.all_devices() if d.backing == wanted)


def cluster_loop_devices() -> list[str]:
    """Loop devices whose backing file the kernel names below a cluster path (relative
    names from a container's mount included: ``/images/...`` of a data root)."""
    found = []
    for device in loopdev.all_devices():
        name = device.backing_file
        if any(str(p) in name for p in CLUSTER_PATHS) or name.startswith(
            ("/images/", "/snapshots/")
        ):
            found.append(f"{device.path} ({name})")
    return found


def cluster_mounts() -> list[str]:
    points = [m.mount_point for m in read_mounts()]
    return [p for p in points if any(p == str(c) or p.startswith(f"{c}/") for c in CLUSTER_PATHS)]


def alive(pids: list[int]) -> list[int]:
    living = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        living.append(pid)
    return living


def cluster_pids() -> list[int]:
    """The PIDs hack/cluster-up recorded for its processes."""
    pid_dir = CLUSTER_RUN / "pids"
    return [int(p.read_text()) for p in pid_dir.iterdir()] if pid_dir.is_dir() else []


def iptables_chains() -> set[str]:
    chains = set()
    for tool in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([tool], capture_output=True, text=True, check=False).stdout
        table = ""
        for line in out.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                chains.add(f"{tool.split('-')[0]}:{table}:{line[1:].split()[0]}")
    return chains
