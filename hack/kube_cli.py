"""kubectl for the cluster measurements in hack/ (new-class-latency, claim-timeline,
many-pods): the current context, objects applied as one List, and the image their pods run."""

from __future__ import annotations

import json
import subprocess
from typing import Any

# What hack/kind-up loads into the nodes (hack/images: busybox), so nothing is pulled.
BUSYBOX = "docker.io/library/busybox:1.36"


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def apply(*objects: dict[str, Any]) -> None:
    """``objects`` applied together, as one List."""
    listing = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    kubectl("apply", "-f", "-", stdin=json.dumps(listing))
