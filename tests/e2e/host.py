"""What the kind cluster can leave on the machine that runs it, read on the host: its nodes
share the host's kernel, so their loop devices and mounts are the host's, and Podman's
network stack writes the host's sysctls, firewall and links."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from csi.host import loopdev
from csi.host.mount import read_mounts

REPO = Path(__file__).resolve().parents[2]
# deploy/kind/cluster.yaml's data roots, and hack/kind-lib.sh's Podman run directory.
KIND_DATA = Path("/var/tmp/localvol-csi-kind")
KIND_RUN = Path("/run/localvol-kind")
# Paths that Podman or the nodes may add, each checked against whether it was there before.
WATCHED_PATHS = (
    Path("/lib/modules"),
    Path("/run/netns"),
    Path("/run/containers"),
    Path("/run/containers/networks"),  # rootful netavark's, whatever the configuration says
    Path("/dev/shm/libpod_lock"),
    Path("/dev/log"),
    Path("/dev/mqueue"),
    Path("/run/libpod"),
    Path("/var/lib/containers/storage"),
    KIND_RUN,
)


def loop_devices_on(image: str | Path) -> list[str]:
    """Loop devices attached to ``image``, found by its inode (dying ones included)."""
    wanted = loopdev.FileId.of(image)
    return sorted(d.path for d in loopdev.all_devices() if d.backing == wanted)


def engine(*args: str, check: bool = True) -> str:
    """hack/kind-engine: the container engine the kind nodes run on (Docker, or the project's
    Podman), as a user reaches it; its output."""
    proc = subprocess.run(
        [str(REPO / "hack" / "kind-engine"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0 or not check, f"hack/kind-engine {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def node_pid(node: str) -> int:
    """The node container's first process, as this host sees it."""
    return int(engine("inspect", "--format", "{{.State.Pid}}", node))


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


@dataclass(frozen=True)
class HostState:
    sysctl: str
    chains: frozenset[str]
    nft_tables: frozenset[str]
    links: frozenset[str]
    mounts: frozenset[str]
    loop_devices: frozenset[str]
    paths: frozenset[str]
    cgroups: frozenset[str]

    @classmethod
    def read(cls) -> HostState:
        return cls(
            sysctl=_run("sysctl", "-a"),
            chains=frozenset(_chains()),
            nft_tables=frozenset(_run("nft", "list", "tables").splitlines()),
            links=frozenset(_links()),
            mounts=frozenset(m.mount_point for m in read_mounts()),
            loop_devices=frozenset(f"{d.path} {d.backing_file}" for d in loopdev.all_devices()),
            paths=frozenset(str(p) for p in WATCHED_PATHS if p.exists()),
            cgroups=frozenset(str(p) for p in Path("/sys/fs/cgroup").glob("*/libpod_parent")),
        )

    def save(self, path: Path) -> None:
        values = {k: v if isinstance(v, str) else sorted(v) for k, v in asdict(self).items()}
        path.write_text(json.dumps(values))

    @classmethod
    def load(cls, path: Path) -> HostState:
        values = json.loads(path.read_text())
        return cls(
            **{
                f.name: values[f.name] if f.name == "sysctl" else frozenset(values[f.name])
                for f in fields(cls)
            }
        )

    def differences(self, before: HostState, sysctl_file: Path) -> list[str]:
        """What differs from ``before``, one line each (empty when nothing does)."""
        found = []
        for name in ("chains", "nft_tables", "links", "mounts", "loop_devices", "paths", "cgroups"):
            now, then = getattr(self, name), getattr(before, name)
            found += [f"{name}: added {item}" for item in sorted(now - then)]
            found += [f"{name}: removed {item}" for item in sorted(then - now)]
        sysctl_file.write_text(before.sysctl)
        diff = subprocess.run(
            [sys.executable, str(REPO / "hack" / "cluster-host"), "sysctl-diff", str(sysctl_file)],
            capture_output=True,
            text=True,
            check=False,
        )
        found += [f"sysctl: {line}" for line in diff.stdout.splitlines()]
        return found


def _chains() -> set[str]:
    chains = set()
    for tool in ("iptables-save", "ip6tables-save"):
        table = ""
        for line in _run(tool).splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                chains.add(f"{tool.split('-')[0]}:{table}:{line[1:].split()[0]}")
    return chains


def _links() -> set[str]:
    return {
        line.split(": ")[1].split("@")[0]
        for line in _run("ip", "-o", "link", "show").splitlines()
        if ": " in line
    }


if __name__ == "__main__":
    # python -m tests.e2e.host save FILE: the host as it is now, for a session started later
    # (hack/test reads it before any tier runs; LOCALVOL_E2E_HOST_BEFORE names it).
    if sys.argv[1:2] != ["save"] or len(sys.argv) != 3:
        sys.exit("usage: python -m tests.e2e.host save FILE")
    HostState.read().save(Path(sys.argv[2]))
