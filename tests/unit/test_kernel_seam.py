"""csi/host/kernel.py is the one seam to the kernel: no other module under csi/ makes an
ioctl or a libc call of its own, so CSI_FAIL_SYSCALL can fail every one of them and each
failure reaches its caller typed, with its errno.

Forbidden outside kernel.py: ``fcntl.ioctl`` (called, or handed on as a callback, under any
name fcntl is imported as), ``from fcntl import ioctl``, and importing ctypes (or cffi):
libc's functions, raw ``syscall(2)`` among them, are reachable only through a foreign
function interface. Allowed: the rest of fcntl (flock, lockf and fcntl(2) itself lock or
flag an open file; no device is asked and a lock has no fault to inject), and the os
module's system calls (open, fsync, lseek, copy_file_range...), whose OSError the caller
handles. Inside kernel.py, ``fcntl.ioctl`` appears in one function, the one every ioctl
passes through.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CSI = Path(__file__).resolve().parents[2] / "csi"
SEAM = CSI / "host" / "kernel.py"
FOREIGN = {"ctypes", "_ctypes", "cffi"}  # foreign function interfaces: libc, syscall(2)
MODULES = sorted(p for p in CSI.rglob("*.py") if p != SEAM)


def _fcntl_names(tree: ast.AST) -> set[str]:
    """The names fcntl is imported as."""
    return {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name == "fcntl"
    }


def _is_ioctl(node: ast.AST, fcntl_names: set[str]) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "ioctl"
        and isinstance(node.value, ast.Name)
        and node.value.id in fcntl_names
    )


def _root(module: str) -> str:
    return module.split(".", 1)[0]


def _imported(call: ast.Call) -> str:
    """The module ``__import__("x")`` or ``importlib.import_module("x")`` imports ("" for
    any other call)."""
    func = call.func
    importer = (isinstance(func, ast.Name) and func.id == "__import__") or (
        isinstance(func, ast.Attribute) and func.attr == "import_module"
    )
    if importer and call.args and isinstance(call.args[0], ast.Constant):
        return str(call.args[0].value)
    return ""


def raw_calls(path: Path) -> list[str]:
    """What ``path`` does with the kernel that only kernel.py may do, by line."""
    tree = ast.parse(path.read_text())
    fcntl_names = _fcntl_names(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, f"import {a.name}") for a in node.names if _root(a.name) in FOREIGN
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if _root(node.module) in FOREIGN:
                found.append((node.lineno, f"from {node.module} import ..."))
            elif node.module == "fcntl" and any(a.name == "ioctl" for a in node.names):
                found.append((node.lineno, "from fcntl import ioctl"))
        elif _is_ioctl(node, fcntl_names):
            found.append((node.lineno, "fcntl.ioctl"))
        elif isinstance(node, ast.Call) and _root(_imported(node)) in FOREIGN:
            found.append((node.lineno, f"imports {_imported(node)}"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(CSI)))
def test_only_the_seam_talks_to_the_kernel(path: Path) -> None:
    assert raw_calls(path) == []


def test_every_ioctl_of_the_seam_passes_through_one_function() -> None:
    """So the fault check and the typed error of ``kernel.ioctl`` cover every ioctl."""
    tree = ast.parse(SEAM.read_text())
    fcntl_names = _fcntl_names(tree)
    functions = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)]
    making = {f.name for f in functions if any(_is_ioctl(n, fcntl_names) for n in ast.walk(f))}
    assert making == {"_raw_ioctl"}
    everywhere = [n for n in ast.walk(tree) if _is_ioctl(n, fcntl_names)]
    assert len(everywhere) == 1


def test_the_check_sees_what_it_forbids(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import fcntl as f\n"
        "import ctypes.util\n"
        "from ctypes import CDLL\n"
        "from fcntl import flock, ioctl\n"
        "f.ioctl(fd, 1)\n"
        "stack.callback(f.ioctl, fd, 2)\n"
        "f.flock(fd, f.LOCK_EX)\n"
        "f.lockf(fd, f.LOCK_UN)\n"
        "kernel.ioctl('copy:clone', fd, 3, where='x')\n"
        "__import__('ctypes')\n"
        "importlib.import_module('cffi')\n"
        "os.fsync(fd)\n"
    )
    assert raw_calls(sample) == [
        "line 2: import ctypes.util",
        "line 3: from ctypes import ...",
        "line 4: from fcntl import ioctl",
        "line 5: fcntl.ioctl",
        "line 6: fcntl.ioctl",
        "line 10: imports ctypes",
        "line 11: imports cffi",
    ]
