"""The package's runtime dependencies are exactly the distributions the driver imports:
hack/run and the driver image install nothing the driver never loads, and nothing it
loads is missing from a plain `pip install`."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_top_levels() -> set[str]:
    """Top-level modules the driver's own code imports (the generated stubs included)."""
    names: set[str] = set()
    for path in (ROOT / "csi").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"csi", "__future__"}


def declared() -> set[str]:
    """The runtime dependencies pyproject.toml declares, by normalised name."""
    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert match, requirement
        names.add(normal(match.group()))
    return names


def test_runtime_dependencies_are_what_the_driver_imports() -> None:
    providers = importlib.metadata.packages_distributions()
    imported = set()
    for module in imported_top_levels():
        assert module in providers, f"the driver imports {module}, which no distribution provides"
        imported |= {normal(dist) for dist in providers[module]}
    assert declared() == imported


def test_the_image_pins_every_runtime_dependency() -> None:
    pinned = {
        normal(line.split("==")[0])
        for line in (ROOT / "deploy/image/requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert declared() <= pinned
