"""The image tests' tools: hack/images' archives (docker-archive tarballs), their root
filesystems unpacked, commands run inside one as a container runtime would (chroot, with
/proc, /dev and /sys, in mount and PID namespaces of their own, so nothing outlives them), and
the Dockerfile replayed without Docker."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.manifests import replay_layers
from tests.manifests.support import ROOT
from tests.support.prerequisites import need

HACK_IMAGES = ROOT / "hack" / "images"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def need_image_build() -> None:
    need(os.geteuid() == 0, "building and running images needs root (debootstrap, chroot)")
    need(shutil.which("unshare") is not None, "needs unshare (util-linux)")


def hack_images(*args: str, timeout: float = 1800, env: Mapping[str, str] | None = None) -> str:
    """Run hack/images; its stdout (the archive paths). Fails with its stderr."""
    proc = subprocess.run(
        [str(HACK_IMAGES), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, f"hack/images {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def sourced(expression: str) -> str:
    """What an expression prints with hack/images sourced (its settings and functions)."""
    proc = subprocess.run(
        ["bash", "-c", f"source {HACK_IMAGES} >/dev/null; {expression}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return proc.stdout.strip()


def normalized(ref: str) -> str:
    """A reference as containerd (and the archive) spell it: busybox:1.36 is
    docker.io/library/busybox:1.36."""
    first = ref.split("/", 1)[0]
    if "/" not in ref:
        return f"docker.io/library/{ref}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{ref}"
    return ref


@dataclass(frozen=True)
class Archive:
    path: Path
    repo_tags: list[str]
    config: dict[str, Any]
    layers: list[str]

    @property
    def run_config(self) -> dict[str, Any]:
        return self.config.get("config") or {}

    @property
    def env_path(self) -> str:
        env = dict(e.split("=", 1) for e in self.run_config.get("Env") or [])
        return str(env.get("PATH", ""))


def read_archive(path: Path) -> Archive:
    with tarfile.open(path) as tar:
        manifest = json.load(_member(tar, "manifest.json"))
        assert len(manifest) == 1, f"{path}: one image per archive"
        config = json.load(_member(tar, manifest[0]["Config"]))
    return Archive(path, manifest[0]["RepoTags"], config, manifest[0]["Layers"])


def _member(tar: tarfile.TarFile, name: str) -> Any:
    member = tar.extractfile(name)
    assert member is not None, f"no {name} in {tar.name!s}"
    return member


def unpack(archive: Archive, dest: Path) -> Path:
    """The archive's layers applied in order at ``dest`` (ownership kept), with the mount
    points a runtime provides."""
    dest.mkdir(parents=True)
    for layer in archive.layers:
        # A pipe: the layers are large, and the archive's entries are plain tar streams.
        with subprocess.Popen(
            ["tar", "-xOf", str(archive.path), layer], stdout=subprocess.PIPE
        ) as source:
            subprocess.run(
                ["tar", "-C", str(dest), "--numeric-owner", "-xf", "-"],
                stdin=source.stdout,
                check=True,
            )
        assert source.returncode == 0
    for mount_point in ("proc", "dev", "sys", "tmp"):
        (dest / mount_point).mkdir(exist_ok=True)
    return dest


def host_tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"needs {name} on the host"
    return found


def chroot_command(
    rootfs: Path,
    argv: Sequence[str],
    *,
    path: str = DEFAULT_PATH,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """``argv`` run chrooted into ``rootfs`` with only PATH, HOME and ``env`` set (``argv[0]``
    looked up on that PATH inside, as a runtime does), in new mount and PID namespaces with
    /proc, /dev and /sys."""
    mount = host_tool("mount")
    # The root a mount point of its own (as in a container: df and mount see it), then
    # the kernel's file systems on it.
    mounts = (
        f'{mount} --rbind "$0" "$0" && {mount} --bind /dev "$0/dev" && '
        f'{mount} --rbind /sys "$0/sys" && exec "$@"'
    )
    chroot = [host_tool("chroot"), *([f"--userspec={user}"] if user else []), str(rootfs)]
    return [
        host_tool("env"),
        "-i",
        f"PATH={path}",
        "HOME=/root",
        *(f"{k}={v}" for k, v in (env or {}).items()),
        host_tool("unshare"),
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--kill-child",
        f"--mount-proc={rootfs}/proc",
        "--",
        "/bin/sh",
        "-c",
        mounts,
        str(rootfs),
        *chroot,
        *argv,
    ]


def run_in(
    rootfs: Path,
    argv: Sequence[str],
    *,
    path: str = DEFAULT_PATH,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        chroot_command(rootfs, argv, path=path, user=user, env=env),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def installed_debs(rootfs: Path) -> dict[str, str]:
    proc = run_in(rootfs, ["dpkg-query", "-W", "-f", "${Package}=${Version}\\n"])
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.split())


def venv_dists(site_packages: Path) -> dict[str, str]:
    """Normalised distribution name -> version, from the dist-info directories."""
    found = {}
    for info in site_packages.glob("*.dist-info"):
        name, version = info.name[: -len(".dist-info")].rsplit("-", 1)
        found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


# --- the Dockerfile, replayed -----------------------------------------------------------


@dataclass
class Replayed:
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]


def dockerfile_steps() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    steps = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            steps.append((word.upper(), rest.strip()))
    return steps


HOST_CA_INSIDE = "tmp/host-ca.crt"  # the host's CA bundle for pip, during the replay only


def replay_dockerfile(rootfs: Path, base: Path, sources: str) -> Replayed:
    """The Dockerfile's steps in the empty directory ``rootfs``, from the Debian root
    filesystem of the tarball ``base`` standing in for its FROM image, with apt sources
    ``sources`` (deb822). COPY, ENV, WORKDIR and RUN (shell form) as Docker runs them;
    .dockerignore's __pycache__ and egg-info are left out. Like `docker build`, it starts
    after the latest RUN whose result is in the layer cache (tests.manifests.replay_layers)
    and saves each RUN's result there."""
    steps = dockerfile_steps()
    made = base.stat()
    start = f"{base}:{made.st_size}:{made.st_mtime_ns}\n{sources}"
    keys = replay_layers.step_keys(start, steps)
    saved = [i for i, (w, _) in enumerate(steps) if w == "RUN" and replay_layers.fresh(keys[i])]
    resumed = saved[-1] if saved else -1
    if resumed >= 0:
        replay_layers.restore(keys[resumed], rootfs)
    else:
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-xf", str(base)], check=True)
        _prepare_for_build(rootfs, sources)
    host_ca = rootfs / HOST_CA_INSIDE
    build_env = {"PIP_CERT": f"/{HOST_CA_INSIDE}"} if host_ca.is_file() else {}
    env = {"PATH": DEFAULT_PATH}
    workdir = "/"
    replayed = Replayed([], [], env)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for index, (word, args) in enumerate(steps):
        if index <= resumed and word in ("COPY", "RUN"):
            continue  # in the saved layer
        if word == "COPY":
            *sources_, dest = args.split()
            target = rootfs / os.path.join(workdir, dest).lstrip("/")
            for source in sources_:
                src = ROOT / source
                into = target / src.name if dest.endswith("/") or len(sources_) > 1 else target
                into.parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, into, ignore=ignore)
                else:
                    shutil.copy2(src, into)
        elif word == "ENV":
            key, _, value = args.partition("=")
            env[key] = value
        elif word == "WORKDIR":
            workdir = os.path.join(workdir, args)
            (rootfs / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif word == "RUN":
            script = ["/bin/sh", "-ec", f"cd {workdir}; {args}"]
            proc = run_in(rootfs, script, path=env["PATH"], env=build_env, timeout=900)
            assert proc.returncode == 0, f"RUN {args}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
            replay_layers.save(keys[index], rootfs)
        elif word == "ENTRYPOINT":
            replayed.entrypoint = json.loads(args)
        elif word == "CMD":
            replayed.cmd = json.loads(args)
        else:
            assert word == "FROM", f"the replay does not know {word}"
    (rootfs / "etc/resolv.conf").unlink()
    host_ca.unlink(missing_ok=True)
    return replayed


def _prepare_for_build(rootfs: Path, sources: str) -> None:
    """What the build needs on top of the base: the apt sources, the host's resolver, and
    the host's CA bundle for pip (a TLS-inspecting egress proxy's CA may be in it; a docker
    build behind one needs the same)."""
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(sources)
    resolv = rootfs / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text(Path("/etc/resolv.conf").read_text())
    host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if host_ca.is_file():
        shutil.copy2(host_ca, rootfs / HOST_CA_INSIDE)
