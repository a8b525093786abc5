"""A User-Mode Linux guest for the tests that need kernel features this host lacks.

Debian's ``user-mode-linux`` kernel has project quotas (xfs and the ext4 quota format) and
gives its processes every capability; it boots here without KVM with the host's / as its
root (hostfs), so the project's venv and code run inside unchanged. ``boot`` starts one
guest for one module of tests: the host makes the disks (sparse images, formatted here),
the guest mounts them with quotas on and runs pytest on the module (tests/guest/inside.py),
and the host reads the JUnit report. Nothing is mounted on the host; the guest's
/tmp, /run and /dev/shm are its own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import types
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.prerequisites import need, need_root

REPO = Path(__file__).resolve().parents[2]
KERNEL = "linux.uml"
WORK_PARENT = "/var/tmp"
MEMORY = "768M"
BOOT_TIMEOUT = 900.0
DISK_SIZE = 512 * 1024 * 1024
# How each filesystem is made so the guest can mount it with project quotas on.
MKFS = {
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "ext4": ["mkfs.ext4", "-q", "-F", "-O", "quota,project", "-E", "quotatype=prjquota"],
}


@dataclass(frozen=True)
class Outcome:
    passed: bool
    text: str  # the failure's report, "" when it passed


@dataclass(frozen=True)
class Run:
    """What one guest did: pytest's exit status (None: no status, the guest failed), each
    test's outcome by its pytest name, and the console and job logs."""

    status: int | None
    outcomes: dict[str, Outcome]
    console: str
    job_log: str

    def explain(self) -> str:
        return (
            f"guest exit status: {self.status}\n--- job log (tail) ---\n{self.job_log[-6000:]}"
            f"\n--- console (tail) ---\n{self.console[-4000:]}"
        )


@contextmanager
def work_dir() -> Iterator[Path]:
    """A directory for one guest's disks, logs and report, where the guest sees the host's
    files: not under /tmp, /run or /dev/shm, which the guest covers with its own tmpfs."""
    path = Path(tempfile.mkdtemp(prefix="localvol-guest-", dir=WORK_PARENT))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def cases(module: Path) -> list[str]:
    """The names pytest gives the tests of ``module`` (``test_x[xfs-param]``), as the guest
    will report them: collected here, without running them."""
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", module],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("::", 1)[1] for line in listed.splitlines() if "::" in line]


def available() -> bool:
    return shutil.which(KERNEL) is not None


def make_disk(path: Path, fs_type: str) -> None:
    with path.open("wb") as fh:
        fh.truncate(DISK_SIZE)
    subprocess.run([*MKFS[fs_type], str(path)], check=True, capture_output=True)


def boot(tests: Path, disks: list[str], work: Path, timeout: float = BOOT_TIMEOUT) -> Run:
    """Boot a guest with a fresh disk of each filesystem in ``disks`` and run pytest on
    ``tests`` (a path in this repository) inside it."""
    work.mkdir(parents=True, exist_ok=True)
    images = []
    for index, fs_type in enumerate(disks):
        image = work / f"disk{index}-{fs_type}.img"
        make_disk(image, fs_type)
        images.append(image)
    argv = [
        KERNEL,
        f"mem={MEMORY}",
        "rootfstype=hostfs",
        "rootflags=/",
        "rw",
        f"uml_dir={work / 'uml'}",
        *(f"ubd{i}={image}" for i, image in enumerate(images)),
        f"init={REPO / 'tests' / 'guest' / 'init.sh'}",
        "con=null",
        "con0=null,fd:1",
        f"LOCALVOL_GUEST_REPO={REPO}",
        f"LOCALVOL_GUEST_PYTHON={sys.executable}",
        f"LOCALVOL_GUEST_OUT={work}",
        f"LOCALVOL_GUEST_DISKS={','.join(disks)}",
        f"LOCALVOL_GUEST_TESTS={tests}",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    ]
    console = work / "console.log"
    with console.open("wb") as log:
        try:
            subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            log.write(f"\n[host] guest still running after {timeout:.0f} s: killed\n".encode())
    for image in images:
        image.unlink(missing_ok=True)
    status_file, junit = work / "status", work / "junit.xml"
    status = int(status_file.read_text()) if status_file.exists() else None
    return Run(
        status=status,
        outcomes=read_junit(junit) if junit.exists() else {},
        console=_read(console),
        job_log=_read(work / "job.log"),
    )


def read_junit(path: Path) -> dict[str, Outcome]:
    """Test name (``test_x[param]``) -> outcome, from pytest's JUnit XML."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        problems = [c for c in case if c.tag in ("failure", "error", "skipped")]
        text = "\n".join(f"{c.tag}: {c.get('message', '')}\n{c.text or ''}" for c in problems)
        outcomes[case.get("name", "")] = Outcome(not problems, text)
    return outcomes


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def check(run: Run, case: str) -> None:
    """Fail the calling test unless the guest ran ``case`` and it passed there."""
    outcome = run.outcomes.get(case)
    if outcome is None:
        pytest.fail(f"the guest did not report {case}\n{run.explain()}")
    if not outcome.passed:
        pytest.fail(f"{case} failed in the guest:\n{outcome.text}\n{run.explain()}")


def run_module(cases: types.ModuleType) -> Run:
    """One guest for a ``*_cases`` module (its ``FILESYSTEMS`` the disks it gets), after the
    prerequisites: root and the kernel (a failure under CI=true, never a skip)."""
    need_root()
    need(available(), f"needs {KERNEL} (Debian's user-mode-linux package)")
    tests = Path(str(cases.__file__)).relative_to(REPO)
    with work_dir() as work:
        return boot(tests, list(cases.FILESYSTEMS), work)
