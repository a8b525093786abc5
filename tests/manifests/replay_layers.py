"""The Dockerfile replay's layer cache, as `docker build` keeps one: the root filesystem after
each RUN step, saved as a tar named by a key of everything that step and the steps before it
depend on (the base, the apt sources, each step's text, the content of each file COPY takes).
A replay starts from the latest step whose layer is saved and runs only the steps after it,
so a change to the driver's code replays the last RUN, and an unchanged tree none.

A layer older than MAX_AGE is made again (the Debian mirror moves on), and only the KEEP
newest are kept. Outside the clone, beside the other builds (LOCALVOL_REPLAY_LAYERS)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.manifests.support import ROOT

LAYERS = Path(os.environ.get("LOCALVOL_REPLAY_LAYERS", "/var/cache/localvol-csi/dockerfile-replay"))
MAX_AGE = 7 * 24 * 3600
KEEP = 6
SKIPPED = ("__pycache__", ".egg-info")  # what .dockerignore leaves out


def content_digest(sources: Sequence[str]) -> str:
    """A digest of the files COPY takes from the tree (names and bytes, in a fixed order)."""
    digest = hashlib.sha256()
    for source in sources:
        path = ROOT / source
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and not any(part.endswith(SKIPPED) for part in file.parts):
                digest.update(str(file.relative_to(ROOT)).encode() + b"\0")
                digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def step_keys(start: str, steps: Sequence[tuple[str, str]]) -> list[str]:
    """The key of the root filesystem after each step: ``start`` (the base and the apt
    sources) chained with each step's text, and a COPY's content."""
    keys, key = [], start
    for word, args in steps:
        extra = content_digest(args.split()[:-1]) if word == "COPY" else ""
        key = hashlib.sha256(f"{key}\n{word} {args}\n{extra}".encode()).hexdigest()
        keys.append(key)
    return keys


def layer(key: str) -> Path:
    return LAYERS / f"{key[:32]}.tar"


def fresh(key: str) -> bool:
    path = layer(key)
    return path.is_file() and time.time() - path.stat().st_mtime < MAX_AGE


def restore(key: str, rootfs: Path) -> None:
    """``rootfs`` emptied and filled from the layer of ``key``."""
    subprocess.run(["find", str(rootfs), "-mindepth", "1", "-delete"], check=True)
    subprocess.run(
        ["tar", "-C", str(rootfs), "--numeric-owner", "-xf", str(layer(key))], check=True
    )


def save(key: str, rootfs: Path) -> None:
    """The layer of ``key`` written from ``rootfs`` (through a temporary name), the oldest
    beyond KEEP removed."""
    LAYERS.mkdir(parents=True, exist_ok=True)
    partial = layer(key).with_suffix(".partial")
    subprocess.run(
        ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True
    )
    partial.replace(layer(key))
    saved = sorted(LAYERS.glob("*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in saved[KEEP:]:
        old.unlink(missing_ok=True)
