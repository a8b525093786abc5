"""The images hack/images builds, checked as a cluster would use them: their archives'
configuration, their root filesystems run (the driver serves gRPC, busybox runs the examples'
commands, pause reaps orphans and stops on SIGTERM), their import into a containerd, and the
Dockerfile replayed on the same Debian base giving the same packages and Python.

Slow when the caches are cold (debootstrap: a few minutes, once per machine); warm, seconds.
The Dockerfile replay installs its packages and requirements from the network the first time
it meets its inputs, and after that replays only the steps after its last saved layer (the
driver's code: the last RUN), as `docker build` would (tests.manifests.replay_layers)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from csi.host.tools import HOST_TOOLS
from csi.pb import csi_pb2, csi_pb2_grpc
from tests.manifests import images
from tests.manifests.images import Archive, read_archive, run_in, unpack
from tests.manifests.support import ROOT
from tests.manifests.test_image import pinned_packages, pinned_requirements

pytestmark = pytest.mark.images
T = TypeVar("T")


@pytest.fixture(scope="module")
def archives() -> dict[str, Archive]:
    """NAME -> archive, every image in hack/images' table (built if stale)."""
    images.need_image_build()
    paths = images.hack_images("build").split()
    table = [line.split()[:2] for line in images.hack_images("list").splitlines()]
    assert len(paths) == len(table), "one archive per image"
    found = {}
    for (name, ref), path in zip(table, paths, strict=True):
        assert Path(path).name == f"{name}.tar"
        archive = read_archive(Path(path))
        assert archive.repo_tags == [images.normalized(ref)], f"{path}: {archive.repo_tags}"
        found[name] = archive
    assert {"localvol-csi", "pause", "busybox"} <= set(found)
    return found


@pytest.fixture(scope="module")
def rootfs(
    archives: dict[str, Archive], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("images")
    yield {name: unpack(archive, base / name) for name, archive in archives.items()}
    shutil.rmtree(base)


def test_configs_name_the_platform_entrypoint_and_path(archives: dict[str, Archive]) -> None:
    for name, archive in archives.items():
        assert (archive.config["architecture"], archive.config["os"]) == ("amd64", "linux"), name
        assert "/bin" in archive.env_path.split(":"), f"{name}: PATH={archive.env_path}"
    driver = archives["localvol-csi"].run_config
    assert (
        driver["Entrypoint"] == images.sourced('printf "%s\\n" "${DRIVER_ENTRYPOINT[@]}"').split()
    )
    assert driver["Cmd"] == images.sourced('printf "%s\\n" "${DRIVER_CMD[@]}"').split()
    assert archives["pause"].run_config["Entrypoint"] == ["/pause"]
    assert archives["pause"].run_config["User"] == "65535:65535"
    assert archives["busybox"].run_config["Cmd"] == ["sh"]


def test_a_warm_build_rebuilds_nothing(archives: dict[str, Archive]) -> None:
    start = time.monotonic()
    proc = subprocess.run(
        [str(images.HACK_IMAGES), "build"], capture_output=True, text=True, check=True, timeout=120
    )
    assert time.monotonic() - start < 20, "a warm build takes seconds"
    assert "building" not in proc.stderr, proc.stderr
    assert proc.stdout.split() == [str(a.path) for a in archives.values()]


def test_driver_image_holds_the_lists_and_runs(
    archives: dict[str, Archive], rootfs: dict[str, Path]
) -> None:
    root, path = rootfs["localvol-csi"], archives["localvol-csi"].env_path
    help_ = run_in(root, ["localvol-csi", "--help"], path=path)
    assert help_.returncode == 0, help_.stderr
    assert "--data-dir" in help_.stdout
    for tool in [*HOST_TOOLS, "mkfs.ext4", "mkfs.xfs", "losetup", "mount"]:
        found = run_in(root, ["sh", "-c", f"command -v {tool}"], path=path)
        assert found.returncode == 0, f"{tool} is not in the driver image"
    assert run_in(root, ["sh", "-c", "command -v pip pip3"], path=path).stdout == ""
    debs = images.installed_debs(root)
    assert {n: debs.get(n) for n in pinned_packages()} == pinned_packages()
    dists = images.venv_dists(root / "opt/localvol-csi/lib/python3.11/site-packages")
    expected = {n.lower(): v for n, v in pinned_requirements().items()}
    assert dists == {**expected, "localvol-csi": dists.get("localvol-csi")}


def test_driver_image_has_every_requirement_of_what_it_installs(
    archives: dict[str, Archive], rootfs: dict[str, Path]
) -> None:
    """--no-deps needs the whole closure pinned: a dependency no one listed fails here."""
    check = """
import importlib.metadata as md, re
have = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in md.distributions()}
for dist in md.distributions():
    for req in dist.requires or []:
        if ";" in req and "extra ==" in req:
            continue
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", req).group()).lower()
        if name not in have:
            print(dist.metadata["Name"], "needs", req)
"""
    root, path = rootfs["localvol-csi"], archives["localvol-csi"].env_path
    proc = run_in(root, ["python3", "-c", check], path=path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "", proc.stdout
    every_module = (
        "import csi, importlib, pkgutil\n"
        "for m in pkgutil.walk_packages(csi.__path__, 'csi.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)"
    )
    imports = run_in(root, ["python3", "-c", every_module], path=path)
    assert imports.returncode == 0, imports.stderr


def test_driver_image_serves_and_is_ready(
    archives: dict[str, Archive], rootfs: dict[str, Path]
) -> None:
    root, archive = rootfs["localvol-csi"], archives["localvol-csi"]
    data = root / "tmp/serve"
    data.mkdir()
    argv = [
        *archive.run_config["Entrypoint"],
        "--endpoint=unix:///tmp/serve/csi.sock",
        "--data-dir=/tmp/serve",
        "--node-id=image-test",
    ]
    command = images.chroot_command(root, argv, path=archive.env_path)
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as proc:
        try:
            # unshare ignores SIGTERM while it waits: signals go to its child, the driver.
            driver = wait_for(lambda: children(proc.pid), "the driver did not start")[0][0]
            wait_for(lambda: (data / "csi.sock").exists(), "the driver opened no socket", 30)
            with grpc.insecure_channel(f"unix://{data}/csi.sock") as channel:
                identity = csi_pb2_grpc.IdentityStub(channel)
                info = identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=10)
                assert info.name == "localvol.csi.dev"
                # A tool missing from the image fails Probe (FAILED_PRECONDITION naming it);
                # ready=false only says reconciliation has not finished yet, so wait it out.
                wait_for(
                    lambda: identity.Probe(csi_pb2.ProbeRequest(), timeout=10).ready.value,
                    "the driver never finished reconciling an empty data directory",
                    30,
                )
            os.kill(driver, signal.SIGTERM)  # as the kubelet stops it
            assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()  # unshare's --kill-child takes the driver with it


def test_busybox_runs_the_examples_commands(
    archives: dict[str, Archive], rootfs: dict[str, Path]
) -> None:
    root, path = rootfs["busybox"], archives["busybox"].env_path

    def ok(*argv: str, user: str | None = None) -> str:
        proc = run_in(root, argv, path=path, user=user)
        assert proc.returncode == 0, f"{argv}: {proc.stderr}"
        return proc.stdout

    assert ok("sh", "-c", "echo hello > /tmp/hello && cat /tmp/hello") == "hello\n"
    assert ok("id").startswith("uid=0(root) gid=0(root)")
    assert ok("id", user="65534:65534").startswith("uid=65534(nobody) gid=65534(nogroup)")
    ok("dd", "if=/dev/zero", "of=/tmp/zeros", "bs=1024", "count=64")
    assert ok("md5sum", "/tmp/zeros").split()[0] == hashlib.md5(bytes(65536)).hexdigest()
    assert ok("stat", "-c", "%s", "/tmp/zeros").strip() == "65536"
    ok("sleep", "0.1")
    assert "proc" in ok("mount")
    assert ok("df", "/").startswith("Filesystem")
    ok("sh", "-c", "echo as nobody > /tmp/nobody", user="65534:65534")  # /tmp is 1777
    for applet in ("blockdev", "httpd", "wget", "sha256sum", "tail", "ls"):
        ok("sh", "-c", f"command -v {applet}")


def test_pause_reaps_orphans_and_stops_on_sigterm_and_sigint(rootfs: dict[str, Path]) -> None:
    pause = rootfs["pause"] / "pause"
    assert subprocess.run(["ldd", str(pause)], capture_output=True, check=False).returncode != 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        with subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", str(pause)]) as proc:
            try:
                pid = wait_for(lambda: children(proc.pid), "pause did not start")[0][0]
                # Two processes orphaned into its PID namespace: pause becomes their parent.
                orphan = ["sh", "-c", "sleep 2 & sleep 2 & :"]
                subprocess.run(["nsenter", "-t", str(pid), "-p", "--", *orphan], check=True)
                # On a busy machine the shell may still be on its way out: poll, not peek.
                wait_for(
                    lambda p=pid: [c[1] for c in children(p)] == ["sleep", "sleep"],
                    f"the orphans did not become pause's children: {children(pid)}",
                )
                wait_for(lambda p=pid: children(p) == [], "exited orphans were not reaped")
                os.kill(pid, sig)
                assert proc.wait(timeout=5) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()


def children(pid: int) -> list[tuple[int, str, str]]:
    """(pid, command, state) of every process whose parent is ``pid``, zombies included."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid:
            found.append((int(stat.parent.name), comm, state))
    return sorted(found)


def wait_for(probe: Callable[[], T], message: str, timeout: float = 10) -> T:
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        assert time.monotonic() < deadline, message
        time.sleep(0.05)
    return result


def test_image_from_binary(rootfs: dict[str, Path], tmp_path: Path) -> None:
    """hack/images-lib.sh's image_from_binary: a static binary at the given path, its
    entrypoint, with /tmp and /etc/passwd; a dynamic binary is refused."""
    lib = ROOT / "hack" / "images-lib.sh"
    env = {**os.environ, "IMAGES_DIR": str(tmp_path / "cache")}
    call = f'source {lib} && image_from_binary example.com/tools/pause:v1 "$0" /bin/pause-copy'
    proc = subprocess.run(
        ["bash", "-c", call, str(rootfs["pause"] / "pause")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    archive = read_archive(Path(proc.stdout.strip()))
    assert archive.repo_tags == ["example.com/tools/pause:v1"]
    assert archive.run_config["Entrypoint"] == ["/bin/pause-copy"]
    root = unpack(archive, tmp_path / "rootfs")
    assert os.access(root / "bin/pause-copy", os.X_OK)
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert "nobody:x:65534:65534" in (root / "etc/passwd").read_text()
    dynamic = subprocess.run(
        ["bash", "-c", f"source {lib} && image_from_binary x.io/y:z /bin/ls /ls"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert dynamic.returncode != 0
    assert "dynamically linked" in dynamic.stderr


def test_archives_import_into_containerd(archives: dict[str, Archive]) -> None:
    """`hack/images verify`: a private containerd (own socket, root and state), every archive
    imported, complete and unpacked; a second import of unchanged inputs is skipped. (It
    installs containerd when missing.)"""
    proc = subprocess.run(
        [str(images.HACK_IMAGES), "verify"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for archive in archives.values():
        (ref,) = archive.repo_tags
        listed = [line for line in proc.stdout.splitlines() if line.startswith(ref + " ")]
        assert listed, f"{ref} is not in containerd's image list:\n{proc.stdout}"
        assert "complete" in listed[0], listed[0]
        assert listed[0].split()[-1] == "true", f"not unpacked: {listed[0]}"
        assert f"{ref}: already in containerd" in proc.stderr
    leftovers = list(Path("/tmp").glob("localvol-images-verify.*"))
    assert not leftovers, f"verify left {leftovers}"


def test_dockerfile_replayed_gives_the_same_image(
    archives: dict[str, Archive], rootfs: dict[str, Path], tmp_path: Path
) -> None:
    """The Dockerfile's steps on the Debian base hack/images starts from (as its FROM image):
    the same Debian packages at the same versions, the same Python distributions, the same
    entrypoint, command and PATH."""
    base = Path(images.sourced("debootstrap_tarball"))
    assert base.is_file(), "no debootstrap tarball: was the driver image built?"
    root = tmp_path / "replay"
    root.mkdir()
    sources = images.sourced(
        'printf "Types: deb\\nURIs: %s\\nSuites: %s %s-updates\\nComponents: main\\n'
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n\\n"
        "Types: deb\\nURIs: %s\\nSuites: %s-security\\nComponents: main\\n"
        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n" '
        '"$(debian_mirror)" "$DEBIAN_SUITE" "$DEBIAN_SUITE" "$(debian_security_mirror)" '
        '"$DEBIAN_SUITE"'
    )
    try:
        replayed = images.replay_dockerfile(root, base, sources + "\n")
        driver = archives["localvol-csi"]
        assert replayed.entrypoint == driver.run_config["Entrypoint"]
        assert replayed.cmd == driver.run_config["Cmd"]
        assert f"PATH={replayed.env['PATH']}" in driver.run_config["Env"]
        assert images.installed_debs(root) == images.installed_debs(rootfs["localvol-csi"])
        site = "opt/localvol-csi/lib/python3.11/site-packages"
        assert images.venv_dists(root / site) == images.venv_dists(rootfs["localvol-csi"] / site)
        served = run_in(root, ["localvol-csi", "--version"], path=replayed.env["PATH"])
        assert served.returncode == 0, served.stderr
    finally:
        shutil.rmtree(root)
