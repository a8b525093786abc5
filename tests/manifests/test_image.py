"""The driver image's definition: one list of Debian packages and one of Python requirements,
read by both builders (the Dockerfile and hack/images), covering every host tool the driver
runs, pinned; both builders configure the same entrypoint, command and PATH."""

from __future__ import annotations

import json
import re
import subprocess

from csi.host.tools import ESSENTIAL_TOOLS, HOST_TOOLS, packages
from tests.manifests.support import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
PACKAGES = ROOT / "deploy" / "image" / "packages.txt"
REQUIREMENTS = ROOT / "deploy" / "image" / "requirements.txt"
# Debian's release numbers of the suites hack/images may debootstrap.
DEBIAN_RELEASES = {"bookworm": "12"}


def pinned_packages() -> dict[str, str]:
    """Package -> version, from deploy/image/packages.txt."""
    found: dict[str, str] = {}
    for line in PACKAGES.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("=")
            assert name not in found, f"{name} is listed twice in {PACKAGES.name}"
            found[name] = version
    return found


def pinned_requirements() -> dict[str, str]:
    lines = REQUIREMENTS.read_text().splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    return dict(p.split("==", 1) for p in pins)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")),
    )
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def hack_images(*expressions: str) -> list[str]:
    """Values from hack/images, sourced (it then only defines its functions and settings)."""
    script = "source hack/images >/dev/null; " + "; ".join(expressions)
    proc = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_package_list_is_pinned() -> None:
    pins = pinned_packages()
    assert pins
    bad = {
        n: v
        for n, v in pins.items()
        if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", n) or not re.fullmatch(r"[0-9][\w.+:~-]*", v)
    }
    assert not bad, f"not package=version: {bad}"


def test_every_host_tool_package_is_in_the_image() -> None:
    missing = [p for p in packages() if p not in pinned_packages()]
    assert not missing, f"{PACKAGES.name} lacks {missing} (needed by csi/host/tools.py)"


def test_dockerfile_installs_the_package_list_and_nothing_else() -> None:
    steps = dockerfile_instructions()
    assert ("COPY", "deploy/image/packages.txt /tmp/packages.txt") in steps
    installs = [args for word, args in steps if word == "RUN" and "apt-get install" in args]
    assert len(installs) == 1, "one apt-get install, from packages.txt"
    # Its arguments are exactly what its own filter makes of the list.
    sed = re.search(r"(sed (?:-e '[^']*' )+)/tmp/packages.txt", installs[0])
    assert sed, f"the apt-get install does not read /tmp/packages.txt: {installs[0]}"
    assert not re.search(r"\S+=\S*\d", installs[0].split("xargs", 1)[1]), "a pin outside the list"
    proc = subprocess.run(
        ["bash", "-c", f"{sed.group(1)} {PACKAGES}"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.split() == [f"{n}={v}" for n, v in pinned_packages().items()]


def test_hack_images_installs_the_same_lists() -> None:
    files = hack_images('echo "$PACKAGES_FILE"', 'echo "$REQUIREMENTS_FILE"')
    assert files == [str(PACKAGES), str(REQUIREMENTS)]
    assert hack_images("image_packages") == [f"{n}={v}" for n, v in pinned_packages().items()]
    script = re.sub(r"\\\n\s*", " ", (ROOT / "hack" / "images").read_text())
    # Into the image go the list's packages (apt) and the requirements file (pip), no others.
    assert "mapfile -t packages < <(image_packages)" in script
    installs = [
        line for line in script.splitlines() if re.search(r"in_rootfs.*apt-get install", line)
    ]
    assert installs
    # One apt-get install, in debian_layer, of its arguments: the driver's base layer passes
    # the list's packages.
    assert all(line.endswith('"$@"; then') for line in installs), installs
    assert 'debian_layer debian-base "${packages[@]}"' in script
    assert "-r /tmp/build/requirements.txt" in script
    assert '"$REQUIREMENTS_FILE" "$work/rootfs/tmp/build/"' in script
    assert not re.search(r"\b[a-z][\w.-]*==\d", script), "a Python pin outside requirements.txt"


def test_dockerfile_installs_the_requirements_then_the_package_without_deps() -> None:
    steps = dockerfile_instructions()
    assert ("COPY", "deploy/image/requirements.txt /src/deploy/image/requirements.txt") in steps
    pips = [args for word, args in steps if word == "RUN" and "pip" in args]
    assert any("-r deploy/image/requirements.txt" in run for run in pips), pips
    assert pips
    assert all(run.count("--no-deps") == run.count(" install ") for run in pips), pips


def test_both_builders_configure_the_same_entrypoint_command_and_path() -> None:
    steps = dict((w, a) for w, a in dockerfile_instructions() if w in ("ENTRYPOINT", "CMD"))
    env = [a for w, a in dockerfile_instructions() if w == "ENV"]
    entrypoint, cmd, path = hack_images(
        'printf "%s\\n" "${DRIVER_ENTRYPOINT[*]}"',
        'printf "%s\\n" "${DRIVER_CMD[*]}"',
        'echo "$DRIVER_PATH"',
    )
    assert json.loads(steps["ENTRYPOINT"]) == entrypoint.split() == ["localvol-csi"]
    assert json.loads(steps["CMD"]) == cmd.split()
    assert env == [f"PATH={path}"]


def test_base_image_is_the_pinned_debian_point_release() -> None:
    base = re.search(r"^FROM debian:(\d+)\.(\d+)-slim$", DOCKERFILE, re.M)
    assert base, "the base image is debian:MAJOR.POINT-slim (an exact point release)"
    base_files = re.fullmatch(r"(\d+)\.\d+\+deb(\d+)u(\d+)", pinned_packages()["base-files"])
    assert base_files, "base-files=MAJOR.x+debMAJORuPOINT pins the point release"
    assert base.groups() == (base_files.group(2), base_files.group(3)), (
        "the Dockerfile's FROM and base-files in packages.txt name different point releases"
    )
    (suite,) = hack_images('echo "$DEBIAN_SUITE"')
    assert DEBIAN_RELEASES.get(suite) == base.group(1), f"hack/images debootstraps {suite}"
    assert re.search(r'^ENTRYPOINT \["localvol-csi"\]', DOCKERFILE, re.M)


def test_tool_list_is_consistent() -> None:
    assert set(ESSENTIAL_TOOLS) <= set(HOST_TOOLS)


def test_runtime_requirements_are_pinned() -> None:
    pins = pinned_requirements()
    assert all(re.fullmatch(r"[\w-]+", n) and re.fullmatch(r"[\w.]+", v) for n, v in pins.items())
    assert {"grpcio", "protobuf"} <= set(pins)
