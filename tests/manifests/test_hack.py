"""The hack scripts fail early and say what is missing, instead of half-running."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.e2e.host import WATCHED_PATHS
from tests.manifests.images import normalized, sourced
from tests.manifests.support import ROOT

# What the scripts need before their first check; nothing else is on the PATH they get.
BASICS = ("env", "bash", "dirname", "id", "cat", "grep")


def bare_path(tmp_path: Path, **fakes: str) -> str:
    """A PATH holding only BASICS (as symlinks) and the given fake tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in BASICS:
        if tool in fakes:
            continue  # a fake written through a symlink would overwrite the real tool
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run the hack scripts"
        (bin_dir / tool).symlink_to(found)
    for name, script in fakes.items():
        fake = bin_dir / name
        fake.write_text(f"#!/bin/sh\n{script}\n")
        fake.chmod(0o755)
    return str(bin_dir)


def run_script(
    name: str, path: str, *args: str, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root"), "GOBIN": "/nonexistent"}
    env.update(extra_env)
    return subprocess.run(
        ["bash", str(ROOT / "hack" / name), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_kind_up_on_docker_without_docker(tmp_path: Path) -> None:
    proc = run_script("kind-up", bare_path(tmp_path), KIND_PROVIDER="docker")
    assert proc.returncode != 0
    assert "docker is not installed" in proc.stderr


def test_kind_up_on_docker_without_a_docker_engine(tmp_path: Path) -> None:
    path = bare_path(tmp_path, docker='echo "Cannot connect to the Docker daemon" >&2; exit 1')
    proc = run_script("kind-up", path, KIND_PROVIDER="docker")
    assert proc.returncode != 0
    assert "no Docker engine answers" in proc.stderr


def test_kind_up_without_a_docker_engine_or_podman(tmp_path: Path) -> None:
    # No engine answers, so Podman: missing, and nothing here can install it.
    path = bare_path(tmp_path, docker='echo "Cannot connect to the Docker daemon" >&2; exit 1')
    proc = run_script("kind-up", path)
    assert proc.returncode != 0
    assert re.search(r"podman is not installed|no apt-get to install them", proc.stderr), (
        proc.stderr
    )


def test_kind_up_refuses_an_unknown_provider(tmp_path: Path) -> None:
    proc = run_script("kind-up", bare_path(tmp_path), KIND_PROVIDER="lxd")
    assert proc.returncode != 0
    assert "KIND_PROVIDER is docker or podman, not lxd" in proc.stderr


def test_kind_up_without_kind_or_go(tmp_path: Path) -> None:
    proc = run_script("kind-up", bare_path(tmp_path, docker="exit 0"))
    assert proc.returncode != 0
    assert "kind is not installed" in proc.stderr


def test_kind_install_without_kubectl(tmp_path: Path) -> None:
    proc = run_script("kind-install", bare_path(tmp_path))
    assert proc.returncode != 0
    assert "kubectl is not installed" in proc.stderr


def test_images_usage(tmp_path: Path) -> None:
    proc = run_script("images", bare_path(tmp_path))
    assert proc.returncode == 2
    assert "hack/images build [NAME...]" in proc.stderr


def test_images_refuses_unknown_names_and_archives_before_any_work(tmp_path: Path) -> None:
    path = bare_path(tmp_path)
    proc = run_script("images", path, "build", "no-such-image")
    assert proc.returncode != 0
    assert "no image named no-such-image" in proc.stderr
    proc = run_script("images", path, "import", "--address", "/nonexistent.sock", "/no/x.tar")
    assert proc.returncode != 0
    assert "no archive /no/x.tar" in proc.stderr
    proc = run_script("images", path, "import")
    assert proc.returncode != 0
    assert "usage: hack/images import --address SOCKET" in proc.stderr
    proc = run_script("images", path, "binary", "example.com/x:1", "/nonexistent", "/x")
    assert proc.returncode != 0
    assert "no binary at /nonexistent" in proc.stderr


def test_images_names_missing_packages_when_it_cannot_install_them(tmp_path: Path) -> None:
    """Without root (a fake id) and without umoci, skopeo and debootstrap on the PATH."""
    proc = run_script("images", bare_path(tmp_path, id="echo 1000"), "build", "busybox")
    assert proc.returncode != 0
    assert "missing host packages (umoci skopeo debootstrap" in proc.stderr
    assert "run as root to install them" in proc.stderr


def go_lib_array(name: str) -> list[str]:
    """The entries of a bash array in hack/go-lib.sh or hack/kind-lib.sh."""
    for script in ("go-lib.sh", "kind-lib.sh"):
        text = (ROOT / "hack" / script).read_text()
        match = re.search(rf"^{name}=\((.*?)\)$", text, re.M | re.S)
        if match:
            return [
                quoted or bare for quoted, bare in re.findall(r'"([^"]+)"|(\S+)', match.group(1))
            ]
    raise AssertionError(f"no array {name} in hack/go-lib.sh or hack/kind-lib.sh")


def test_every_go_program_the_scripts_and_tests_run_is_built() -> None:
    """Each $GOBIN/NAME the hack scripts or the tests run is a program of go-lib.sh's one
    module (a main of ours, hack/go/NAME/main.go, is the package ./NAME of that module), the
    storage suite's test binary or kind (`go install` at its pinned version), and the cluster
    builds what it runs."""
    ours = {
        name: package
        for name, package in (entry.split("|") for entry in go_lib_array("GO_PROGRAMS"))
        if package.startswith("./")
    }
    sources = {d.name for d in (ROOT / "hack" / "go").iterdir() if (d / "main.go").is_file()}
    assert ours == {name: f"./{name}" for name in sources}, "a hack/go/NAME/main.go without its row"
    built = {entry.split("|")[0] for entry in go_lib_array("GO_PROGRAMS")}
    built |= {"e2e.test", "kind"}
    used = set()
    for path in [*(ROOT / "hack").iterdir(), *(ROOT / "tests").rglob("*.py")]:
        if path.is_file():
            text = path.read_text(errors="replace")
            used |= set(re.findall(r"\$(?:GOBIN|K8S_BIN)/([a-z][a-z0-9.-]+)", text))
            used |= set(re.findall(r'GO_BIN / "([a-z][a-z0-9.-]+)"', text))
    assert used, "no program found: the patterns above no longer match the scripts"
    assert used - built == set()
    cluster = set(go_lib_array("CLUSTER_PROGRAMS"))
    assert cluster <= built
    sidecars = {entry.split("|")[1] for entry in go_lib_array("SIDECAR_IMAGES")}
    assert sidecars <= cluster


def kind_lib(call: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``call`` (a function of hack/kind-lib.sh and its arguments) under ``set -euo
    pipefail``, with only ``env`` (PATH among it) and no Go programs."""
    script = (
        f"set -euo pipefail; source {ROOT / 'hack' / 'lib.sh'}; "
        f"source {ROOT / 'hack' / 'kind-lib.sh'}; {call}"
    )
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={"GOBIN": "/nonexistent", **env},
        timeout=60,
        check=False,
    )


def test_host_reading_lists_the_paths_that_exist_and_succeeds_when_the_last_does_not(
    tmp_path: Path,
) -> None:
    """The baseline hack/kind-up takes under `set -e`: a missing last path is no failure."""
    fakes = {
        "iptables-save": "echo '*filter'",
        "ip6tables-save": "echo '*filter'",
        "nft": "echo 'table inet filter'",
        "sysctl": "printf 'b = 2\\na = 1\\n'",
        "sort": 'exec /usr/bin/sort "$@"',
        "mkdir": 'exec /bin/mkdir "$@"',
    }
    present = tmp_path / "present"
    present.mkdir()
    reading = tmp_path / "reading"
    proc = kind_lib(
        f"host_reading {reading} {present} {tmp_path / 'absent'}",
        PATH=bare_path(tmp_path, **fakes),
    )
    assert proc.returncode == 0, proc.stderr
    assert (reading / "existing-paths").read_text() == f"{present}\n"
    assert (reading / "sysctl").read_text() == "a = 1\nb = 2\n"
    assert (reading / "iptables").read_text() == "*filter\n"


def test_teardown_removes_what_the_cluster_added_inside_a_path_that_was_there(
    tmp_path: Path,
) -> None:
    """A /run/containers another Podman made before the cluster stays (with what it held);
    the networks directory netavark added inside it during the cluster goes; a path that
    was not there at all goes whole; a path there before stays."""
    run, containers = tmp_path / "run", tmp_path / "containers"
    networks, theirs, added, kept = (
        containers / "networks",
        containers / "storage",
        tmp_path / "netns-like",
        tmp_path / "was-there",
    )
    for path in (networks, theirs, added, kept):
        path.mkdir(parents=True)
    (networks / "ipam.db").write_bytes(b"db")
    (run / "baseline").mkdir(parents=True)
    (run / "baseline" / "existing-paths").write_text(f"{containers}\n{kept}\n")
    proc = kind_lib(
        f"remove_added_paths {containers} {networks} {added} {kept} {tmp_path / 'absent'}",
        PATH="/usr/bin:/bin",
        KIND_RUN=str(run),
    )
    assert proc.returncode == 0, proc.stderr
    assert not networks.exists()
    assert not added.exists()
    assert theirs.is_dir()
    assert kept.is_dir()


def test_the_baseline_and_the_teardown_watch_the_same_podman_paths() -> None:
    """Every path the teardown may remove was read before the cluster, netavark's fixed
    run directory among them; the e2e host check watches them too."""
    paths = go_lib_array("PODMAN_HOST_PATHS")
    assert "/run/containers/networks" in paths
    assert set(paths) <= {str(p) for p in WATCHED_PATHS}


def test_the_cluster_measurements_run_an_image_kind_up_loads() -> None:
    """hack/claim-timeline, many-pods and new-class-latency run their pods on a cluster of
    `hack/kind-up`, which pulls nothing: their image is one it loads into the nodes."""
    loaded = kind_lib("node_image_names", PATH=os.environ["PATH"]).stdout.split()
    assert loaded, "hack/kind-up loads no image of hack/images"
    rows = sourced(f"for name in {' '.join(loaded)}; do image_row $name; done").splitlines()
    refs = {normalized(row.split()[1]) for row in rows}
    used = re.search(r'^BUSYBOX = "([^"]+)"', (ROOT / "hack" / "kube_cli.py").read_text(), re.M)
    assert used is not None
    assert normalized(used.group(1)) in refs
