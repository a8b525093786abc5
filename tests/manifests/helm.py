"""The Helm chart as `helm` renders it (the Helm v4 CLI hack/lib.sh builds from the Go
module proxy into GOBIN, like kustomize)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.manifests.support import DEPLOY, Obj, gobin
from tests.support.prerequisites import need

CHART = DEPLOY / "helm" / "localvol-csi"
CI_VALUES = CHART / "ci"


def helm_binary() -> str:
    for candidate in (os.environ.get("HELM"), str(gobin() / "helm"), shutil.which("helm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    need(False, "helm not found (hack/test builds it with go install)")
    raise AssertionError("unreachable")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, check=False, timeout=120
    )


def template(*options: str) -> tuple[Obj, ...]:
    """The objects ``helm template`` makes of the chart with ``options`` (-f, --set): fresh
    ones at every call (the rendering is cached, the objects are not)."""
    return tuple(d for d in yaml.safe_load_all(_rendered(*options)) if d)


@functools.cache
def _rendered(*options: str) -> str:
    proc = helm("template", "localvol-csi", str(CHART), "--namespace", "localvol-csi", *options)
    assert proc.returncode == 0, f"helm template {' '.join(options)} failed:\n{proc.stderr}"
    return proc.stdout


def values_file(name: str) -> Path:
    return CI_VALUES / f"{name}-values.yaml"


def by_identity(objects: tuple[Obj, ...]) -> dict[tuple[str, str, str, str], Obj]:
    found: dict[tuple[str, str, str, str], Obj] = {}
    for obj in objects:
        meta = obj.get("metadata", {})
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        assert key not in found, f"{key} rendered twice"
        found[key] = obj
    return found
