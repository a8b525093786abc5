"""Prerequisites: a missing one skips the test, or fails it under CI=true."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing; under CI=true a missing prerequisite fails."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing under CI: {reason}")
    pytest.skip(reason)


def need_root() -> None:
    need(os.geteuid() == 0, "needs root (loop devices and mounts)")
    need(Path("/dev/loop-control").exists(), "needs /dev/loop-control")


def need_tool(tool: str) -> None:
    need(shutil.which(tool) is not None, f"needs {tool} on PATH")
