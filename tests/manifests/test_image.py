"""The image definition installs every host tool the driver runs, pinned."""

from __future__ import annotations

import re

from csi.host.tools import ESSENTIAL_TOOLS, HOST_TOOLS, packages
from tests.manifests.support import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def installed_packages() -> dict[str, str]:
    """Package -> pinned version (with ARG defaults substituted) from the apt-get line."""
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, re.M))
    install = re.search(r"apt-get install[^\n]*((?:\n[^\n]*\\)*\n[^\n]*)", DOCKERFILE)
    assert install, "no apt-get install in the Dockerfile"
    found: dict[str, str] = {}
    for name, version in re.findall(r"([a-z0-9.+-]+)=(\$\{\w+\}|[\w.+:~-]+)", install.group(0)):
        found[name] = args.get(version.strip("${}"), version)
    return found


def test_every_host_tool_package_is_installed_and_pinned() -> None:
    installed = installed_packages()
    missing = [p for p in packages() if p not in installed]
    assert not missing, f"Dockerfile does not install {missing} (needed by csi/host/tools.py)"
    assert all(re.fullmatch(r"[\w.+:~-]+", v) for v in installed.values()), installed


def test_base_image_is_pinned_and_entrypoint_needs_no_shell() -> None:
    base = re.search(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert base, "no FROM line"
    assert re.search(r":\d+\.\d+\.\d+", base.group(1)), "base image needs an exact tag"
    assert re.search(r'^ENTRYPOINT \["localvol-csi"\]', DOCKERFILE, re.M)


def test_tool_list_is_consistent() -> None:
    assert set(ESSENTIAL_TOOLS) <= set(HOST_TOOLS)


def test_runtime_requirements_are_pinned() -> None:
    lines = (ROOT / "deploy" / "image" / "requirements.txt").read_text().splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    assert pins
    assert all(re.fullmatch(r"[\w-]+==[\w.]+", p) for p in pins), pins
    names = {p.split("==")[0] for p in pins}
    assert {"grpcio", "protobuf"} <= names
