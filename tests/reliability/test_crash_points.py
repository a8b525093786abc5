"""Crash points: SIGKILL at every step of every multi-step operation, then restart and retry.

For each point in csi.faults.POINTS and each kind of volume the point applies to: a driver
started with the fault drives the volume up to the operation holding the point (no earlier
step passes it: test_no_set_up_step_passes_the_point) and dies there (UNAVAILABLE for the
caller, SIGKILL for the process), a driver without the fault is started again, and the same
call is retried as the orchestrator would. The
retry must succeed and leave records and host in agreement (host_checks.assert_consistent),
with data written before the crash intact and the volume usable to the end of its life.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time

import pytest

from csi.faults import POINTS
from tests.reliability.lifecycle import ALL, EXT4, LOOPS, Life
from tests.support.driver import DriverProcess, crash_during
from tests.support.invariants import assert_consistent
from tests.support.kubelet import Flavour
from tests.support.prerequisites import need

# Which kinds of volume pass through each crash point.
APPLIES: dict[str, tuple[Flavour, ...]] = {
    "create:record": ALL,
    "create:image": LOOPS,
    "create:set-up": (EXT4,),
    "create:formatted": LOOPS,
    "create:renamed": ALL,
    "stage:record": ALL,
    "stage:attached": LOOPS,
    "stage:mounted": (EXT4,),
    "publish:record": ALL,
    "publish:mounted": ALL,
    "expand:grown": ALL,
    "snapshot:record": ALL,
    "snapshot:copied": ALL,
    "unpublish:unmounted": ALL,
    "unstage:unmounted": LOOPS,
    "unstage:detached": ALL,
    "delete:unused": ALL,
    "delete:marked": ALL,
    "delete:removed": ALL,
}
IN_USE = ("create", "stage", "publish", "write")
SETUP: dict[str, tuple[str, ...]] = {
    "create": (),
    "stage": ("create",),
    "publish": ("create", "stage"),
    "expand": IN_USE,
    "snapshot": IN_USE,
    "unpublish": IN_USE,
    "unstage": (*IN_USE, "unpublish"),
    "delete": (*IN_USE, "unpublish", "unstage"),
}
CASES = [(p, f) for p in sorted(APPLIES) for f in APPLIES[p]]


def test_every_crash_point_is_covered() -> None:
    assert set(APPLIES) == set(POINTS)


def test_no_set_up_step_passes_the_point() -> None:
    """A point is named for the operation that passes it, and no operation leading up to it
    is that one: so a driver may carry the fault from its start."""
    for point in POINTS:
        op = point.split(":")[0]
        assert op in SETUP, point
        assert op not in SETUP[op], point


@pytest.mark.parametrize(("point", "flavour"), CASES, ids=[f"{p}-{f.id}" for p, f in CASES])
def test_crash_then_retry_converges(
    driver_process: DriverProcess, point: str, flavour: Flavour
) -> None:
    op = point.split(":")[0]
    life = Life(driver_process, flavour)
    driver_process.start(fault=point)
    for step in SETUP[op]:
        life.do(step)
    crash_during(driver_process, lambda: life.do(op))

    driver_process.start()
    assert "event=reconciled" in driver_process.log()
    # Before any retry, start-up reconciliation alone must leave records covering the host.
    assert_consistent(driver_process.data_dir, driver_process.kubelet_root, settled=False)
    life.do(op)  # the orchestrator's retry
    life.verify(op)
    life.finish()
    assert driver_process.stop() == 0


SYS_TGKILL = {"x86_64": 234, "aarch64": 131}


def test_sigterm_to_any_thread_stops_the_driver(driver_process: DriverProcess) -> None:
    tgkill = SYS_TGKILL.get(os.uname().machine)
    need(tgkill is not None, f"tgkill syscall number unknown on {os.uname().machine}")
    assert tgkill is not None
    driver_process.start()
    assert driver_process.proc is not None
    pid, tid = driver_process.proc.pid, driver_process.thread_ids()[-1]
    assert ctypes.CDLL(None).syscall(tgkill, pid, tid, signal.SIGTERM) == 0
    try:
        status = driver_process.proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        pytest.fail("driver still running 8 s after SIGTERM")
    assert status == 0


def test_more_sigterms_while_stopping_still_end_in_a_clean_exit(
    driver_process: DriverProcess,
) -> None:
    """A SIGTERM after the first (a impatient supervisor, or the kernel handing the first
    to a thread that never noticed it) must not kill the driver while it is stopping:
    Python's own shutdown puts back the default action of the signals it handled."""
    driver_process.start()
    proc = driver_process.proc
    assert proc is not None
    deadline = time.monotonic() + 15
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.002)
    assert proc.poll() is not None, "driver still running 15 s after SIGTERM"
    driver_process.proc = None
    assert proc.returncode == 0
