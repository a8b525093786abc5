"""Docker and Podman volumes from the driver, with real Podman (root).

Podman runs on a private containers.conf and storage under the test's own directory:
cgroupfs, the file events logger, runc (Debian's crun refuses this machine's hybrid cgroup
set-up), ulimits no higher than what runc may set here without CAP_SYS_RESOURCE, and no
network (``netns = "none"``), so nothing makes bridges or firewall rules on the host. The
image is the project's own busybox archive (hack/images), loaded from disk: no registry.
Everything made is removed after, and the test checks no mount, loop device or cgroup of
it is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from csi.host import loopdev, mount
from csi.server import build
from tests.support.driver import REPO, make_config
from tests.support.prerequisites import need, need_root, need_tool

IMAGE_ARCHIVE = Path("/var/cache/localvol-csi/images/busybox.tar")
IMAGE = "docker.io/library/busybox:1.36"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# What a rootful Podman makes on the host whatever its configuration says: netavark's run
# directory is fixed. Each is removed after if the test made it, the deepest first: a
# /run/containers that was there before stays, the networks directory made inside it goes.
# Its locks are files under the test's tmp_dir (lock_type below), so the host's shared-memory
# segment is not among them: the fixture checks it is left as it was.
PODMAN_RUN_PATHS = (Path("/run/containers/networks"), Path("/run/containers"))
LOCK_SEGMENT = Path("/dev/shm/libpod_lock")
pytestmark = pytest.mark.root

COMPOSE = """\
services:
  web:
    image: {image}
    network_mode: none
    command: ["sh", "-c", "echo run >> /app/data/runs; wc -l < /app/data/runs"]
    volumes:
      - web-data:/app/data
volumes:
  web-data:
    driver: localvol
    driver_opts:
      size: 64Mi
"""


@dataclass
class Podman:
    root: Path
    env: dict[str, str]
    data: Path

    def run(self, *argv: str, check: bool = True, timeout: float = 120) -> str:
        done = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def podman(self, *args: str, check: bool = True) -> str:
        return self.run("podman", *args, check=check)


def _cgroups() -> set[Path]:
    return {p for p in CGROUP_ROOT.glob("*/libpod_parent*")} | set(
        CGROUP_ROOT.glob("*/machine.slice/libpod-*")
    )


def _remove_cgroups(paths: set[Path]) -> None:
    # Deepest first: a cgroup directory goes only once its children have.
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if child.is_dir():
                child.rmdir()
        path.rmdir()


def _config(root: Path, socket: Path, runroot: Path) -> dict[str, str]:
    """A Podman of the test's own under ``root``. Its ``runroot`` must be short: the cleanup
    that conmon runs when a container exits gets it as --runroot, which Podman refuses past
    50 characters (the cleanup then fails, and every `podman run` waits out conmon's 20 s)."""
    import resource

    nofile = min(1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    nproc = min(1024, resource.getrlimit(resource.RLIMIT_NPROC)[1])
    (root / "containers.conf").write_text(
        f"""\
[containers]
netns = "none"
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
log_driver = "k8s-file"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
runtime = "runc"
lock_type = "file"
tmp_dir = "{root}/tmp"
volume_path = "{root}/volumes"
[network]
network_config_dir = "{root}/net"
[engine.volume_plugins]
localvol = "{socket}"
"""
    )
    (root / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{root}/graph"\nrunroot = "{runroot}"\n'
    )
    (root / "registries.conf").write_text("")
    bindir = str(Path(sys.executable).parent)  # podman-compose from the test extras
    return dict(
        os.environ,
        CONTAINERS_CONF=str(root / "containers.conf"),
        CONTAINERS_STORAGE_CONF=str(root / "storage.conf"),
        CONTAINERS_REGISTRIES_CONF=str(root / "registries.conf"),
        PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
    )


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    need_root()
    for tool in ("podman", "runc", "conmon"):
        need_tool(tool)
    if not IMAGE_ARCHIVE.exists():
        subprocess.run([str(REPO / "hack" / "images"), "build", "busybox"], check=False)
    need(IMAGE_ARCHIVE.exists(), f"needs {IMAGE_ARCHIVE} (hack/images build busybox)")
    made_here = [path for path in PODMAN_RUN_PATHS if not path.exists()]
    lock_segment_before = LOCK_SEGMENT.exists()
    cgroups_before = _cgroups()
    root = tmp_path / "podman"
    root.mkdir()
    socket = tmp_path / "plugin.sock"
    runroot = Path(tempfile.mkdtemp(prefix="lvpm-", dir="/run"))
    env = _config(root, socket, runroot)
    data = tmp_path / "data"
    driver = build(make_config(data, docker_plugin_socket=socket))
    driver.start()
    driver.reconcile_then_ready()
    pm = Podman(root, env, data)
    try:
        pm.podman("load", "-i", str(IMAGE_ARCHIVE))
        yield pm
    finally:
        pm.podman("rm", "--all", "--force", check=False)
        pm.podman("volume", "rm", "--all", "--force", check=False)
        pm.podman("system", "reset", "--force", check=False)
        driver.stop(grace=1.0)
        for place in (tmp_path, runroot):
            for entry in reversed(mount.mounts_under(place)):
                mount.unmount(entry.mount_point)
        _remove_cgroups(_cgroups() - cgroups_before)
        for path in made_here:
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(runroot, ignore_errors=True)
    assert not mount.mounts_under(tmp_path), "mounts of the test are left"
    assert not _cgroups() - cgroups_before, "cgroups of the test are left"
    assert not _loops_under(tmp_path), "loop devices of the test are left"
    assert not [p for p in made_here if p.exists()], "Podman's run directories are left"
    assert LOCK_SEGMENT.exists() == lock_segment_before, "Podman made the host's lock segment"


def _loops_under(path: Path) -> list[str]:
    table = loopdev.LoopTable.read()
    images = list(path.rglob("*.img"))
    return [d for image in images for d in table.devices_of(image, read_only=None)]


def _plugin_volumes(pm: Podman) -> list[str]:
    records = pm.data / "state" / "volumes"
    return sorted(p.name for p in records.iterdir()) if records.is_dir() else []


def test_podman_volume_shared_size_enforced_and_removed(podman: Podman) -> None:
    pm = podman
    pm.podman("volume", "create", "--driver", "localvol", "-o", "size=64Mi", "web-data")
    assert "localvol" in pm.podman("volume", "ls")
    run = ("run", "--rm", "--pull=never", "-v", "web-data:/app/data", IMAGE, "sh", "-c")
    pm.podman(*run, "echo hello from one > /app/data/note")
    assert pm.podman(*run, "cat /app/data/note").strip() == "hello from one"
    out = pm.podman(*run, "dd if=/dev/zero of=/app/data/fill bs=1M count=100 2>&1; echo rc=$?")
    assert "No space left on device" in out, out
    assert "rc=0" not in out
    assert len(_plugin_volumes(pm)) == 1
    pm.podman("volume", "rm", "web-data")
    assert _plugin_volumes(pm) == []
    assert "web-data" not in pm.podman("volume", "ls")


def test_containers_started_together_on_one_volume_all_run(podman: Podman) -> None:
    """Podman asks the plugin once per container and never retries: containers started at
    the same moment on one volume all get it, and once the last has stopped nothing of it
    is mounted."""
    pm = podman
    pm.podman("volume", "create", "--driver", "localvol", "-o", "size=64Mi", "together")
    run = ("run", "--rm", "--pull=never", "-v", "together:/data", IMAGE, "sh", "-c")
    with ThreadPoolExecutor(4) as pool:
        outs = list(
            pool.map(lambda i: pm.podman(*run, f"echo {i} > /data/{i}; ls /data"), range(4))
        )
    assert all(f"{i}" in out for i, out in enumerate(outs)), outs
    assert sorted(pm.podman(*run, "ls /data").split()) == ["0", "1", "2", "3", "lost+found"]
    assert mount.mounts_under(pm.data) == [], "mounted after every container stopped"
    pm.podman("volume", "rm", "together")
    assert _plugin_volumes(pm) == []


def test_compose_file_runs_twice_and_down_removes_the_volume(
    podman: Podman, tmp_path: Path
) -> None:
    pm = podman
    found = shutil.which("podman-compose", path=pm.env["PATH"])
    need(found is not None, "needs podman-compose (pip install -e '.[test]')")
    project = tmp_path / "webapp"
    project.mkdir()
    (project / "compose.yaml").write_text(COMPOSE.format(image=IMAGE))
    compose = ("podman-compose", "-f", str(project / "compose.yaml"), "-p", "webapp")
    first = pm.run(*compose, "run", "--rm", "web")
    second = pm.run(*compose, "run", "--rm", "web")
    assert first.strip().splitlines()[-1] == "1", first
    assert second.strip().splitlines()[-1] == "2", second  # the data persisted
    assert len(_plugin_volumes(pm)) == 1
    pm.run(*compose, "down", "-v")
    assert _plugin_volumes(pm) == []


def test_docker_cli_against_podman_service(podman: Podman, tmp_path: Path) -> None:
    pm = podman
    need(shutil.which("docker") is not None, "needs the docker CLI (Debian's docker.io)")
    api = tmp_path / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{api}"],
        env=pm.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not api.exists():
            assert time.monotonic() < deadline, "podman system service did not start"
            time.sleep(0.1)
        env = dict(pm.env, DOCKER_HOST=f"unix://{api}")

        def run(*args: str) -> str:
            return _run(env, "docker", *args)

        run("volume", "create", "--driver", "localvol", "--opt", "size=64Mi", "dweb")
        assert "localvol" in run("volume", "ls")

        def container(script: str) -> str:
            # Detached and waited for: an attached `docker run` through Podman's API
            # hangs here past its output.
            line = ("run", "-d", "--network", "none", "-v", "dweb:/data", IMAGE, "sh", "-c")
            cid = run(*line, script).strip()
            code = run("wait", cid).strip()
            run("rm", cid)
            return code  # the exit code: logs read back through the API come back empty here

        assert container("echo from docker > /data/f") == "0"
        assert container('test "$(cat /data/f)" = "from docker"') == "0"
        assert container('test "$(cat /data/f)" = "something else"') == "1"  # it can fail
        run("volume", "rm", "dweb")
        assert _plugin_volumes(pm) == []
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()


def _run(env: dict[str, str], *argv: str) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{argv} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout
