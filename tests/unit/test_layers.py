"""Where the OS is touched: the layers above csi/host/ change nothing on the host themselves
(no os, shutil, subprocess, ctypes or fcntl; no Path method that writes), so every change to
files, mounts and devices goes through host/, where errors are typed and faults injected."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CSI = Path(__file__).resolve().parents[2] / "csi"
FORBIDDEN_MODULES = {"os", "shutil", "subprocess", "ctypes", "fcntl", "socket"}
WRITING_METHODS = {
    "mkdir",
    "unlink",
    "rmdir",
    "rename",
    "replace",
    "chmod",
    "touch",
    "write_text",
    "write_bytes",
    "symlink_to",
    "hardlink_to",
}
# Path.rename and Path.replace take the target alone; str.replace (old, new[, count]) and
# dataclasses.replace (an object and keywords) have other shapes and write nothing.
TARGET_ONLY = {"rename", "replace"}
LAYERS = sorted([*CSI.glob("volumes/*.py"), *CSI.glob("services/*.py")])


def touches(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module in FORBIDDEN_MODULES:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and _writes(func.attr, node):
                found.append(f"line {node.lineno}: .{func.attr}()")
            if isinstance(func, ast.Name) and func.id == "open":
                found.append(f"line {node.lineno}: open()")
    return found


def _writes(method: str, call: ast.Call) -> bool:
    """A Path method that writes: by its name, and for rename and replace by the call's
    shape too (the target alone)."""
    if method in TARGET_ONLY:
        return len(call.args) == 1 and not call.keywords
    return method in WRITING_METHODS


@pytest.mark.parametrize(
    "path",
    LAYERS,
    ids=lambda p: str(p.relative_to(CSI)),
)
def test_layer_changes_the_host_only_through_host(path: Path) -> None:
    assert touches(path) == []


def test_the_check_sees_what_it_forbids(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nfrom shutil import rmtree\np.mkdir()\nopen('x')\n"
        "p.replace(q)\nname.replace('-', '_')\nname.replace('-', '_', 1)\n"
        "dataclasses.replace(record, phase=READY)\np.rename(q)\n"
    )
    assert touches(sample) == [
        "import os",
        "from shutil import ...",
        "line 3: .mkdir()",
        "line 4: open()",
        "line 5: .replace()",
        "line 9: .rename()",
    ]
