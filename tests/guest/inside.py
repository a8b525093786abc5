"""The job a guest runs (``python -m tests.guest.inside``, from tests/guest/init.sh).

In the guest's kernel: load the quota format modules (the guest has no insmod; the
``finit_module`` system call does it), mount each disk the host attached with project quotas
on (xfs ``prjquota``; ext4 made with the ``quota`` and ``project`` features, ``prjquota``),
then run pytest on the module the host named, its report in JUnit XML where the host reads
it. The exit status is pytest's; a set-up failure is 3 with its reason in the job's log.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
from pathlib import Path

MODULES = (
    "kernel/fs/quota/quota_tree.ko",
    "kernel/fs/quota/quota_v2.ko",
    "kernel/drivers/block/loop.ko",
)
SYS_FINIT_MODULE = 313  # x86_64
ROOTS = Path("/tmp/roots")
EEXIST = 17


def load_modules() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    base = Path("/usr/lib/uml/modules") / platform.release()
    for relative in MODULES:
        fd = os.open(base / relative, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.syscall(SYS_FINIT_MODULE, fd, b"", 0) != 0:
                code = ctypes.get_errno()
                if code != EEXIST:
                    raise OSError(code, f"finit_module {relative}: {os.strerror(code)}")
        finally:
            os.close(fd)


def mount_disks(disks: list[str]) -> dict[str, Path]:
    """Disk i (fs type named by the host) is /dev/ubd<a+i>, mounted at ROOTS/<fs type>."""
    roots = {}
    for index, fs_type in enumerate(disks):
        device = f"/dev/ubd{chr(ord('a') + index)}"
        target = ROOTS / fs_type
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", fs_type, "-o", "prjquota", device, str(target)], check=True)
        roots[fs_type] = target
    return roots


def main() -> int:
    out = Path(os.environ["LOCALVOL_GUEST_OUT"])
    try:
        load_modules()
        roots = mount_disks(os.environ["LOCALVOL_GUEST_DISKS"].split(","))
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"guest set-up failed: {exc}", flush=True)
        return 3
    env = dict(os.environ, LOCALVOL_GUEST_ROOTS=",".join(f"{k}={v}" for k, v in roots.items()))
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rA",
        f"--junitxml={out / 'junit.xml'}",
        os.environ["LOCALVOL_GUEST_TESTS"],
    ]
    return subprocess.run(argv, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
