"""Helpers for the ``localvol-csi inspect`` tests: run the command as a user does, and a
fingerprint of a data dir that changes if anything in it is written, added or removed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def inspect_command(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "csi", "inspect", "--data-dir", str(data), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def inspect_json(data: Path) -> dict[str, Any]:
    proc = inspect_command(data, "--output", "json")
    assert proc.returncode == 0, proc.stderr
    parsed: dict[str, Any] = json.loads(proc.stdout)
    return parsed


def fingerprint(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """path -> (mode, size, mtime_ns, sha256 of small regular files) for everything under
    ``root``, not following symlinks and not descending into mount points."""
    found: dict[str, tuple[int, int, int, str]] = {}
    device = root.stat().st_dev
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(directory, d)).st_dev == device]
        for name in [*dirs, *files]:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            digest = ""
            if os.path.isfile(path) and not os.path.islink(path) and st.st_size < 1 << 20:
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            found[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return found
