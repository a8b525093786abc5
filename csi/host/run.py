"""Run host commands: argument lists only, never a shell; secrets kept out of errors.

Each command is bounded twice: by its own cap (``timeout``, two minutes unless the caller
says otherwise) and by the deadline of the RPC it serves (``csi.host.deadline``), whichever
ends first. A command past its bound is killed with its whole process group. Once the
deadline has passed, a command still starts, with a short grace instead: what runs then is
nearly always a rollback (unmount, detach) or a ``finally`` step, and cutting it would leave
a half-made volume behind, while the caller has stopped waiting anyway. Tools listed in
``RUNS_PAST_DEADLINE`` are never cut short by a deadline, only by their cap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence

from csi.host import deadline
from csi.host.errors import (
    CommandError,
    CommandFailed,
    CommandTimedOut,
    DeadlineReached,
    NoSpace,
    ToolMissing,
)
from csi.host.observe import observed
from csi.host.orphans import OWNER_ENV
from csi.host.tools import HOST_TOOLS, RUNS_PAST_DEADLINE

log = logging.getLogger(__name__)

# Set once at start (csi.server): the mark every forked command carries, so a restarted
# driver can stop what a killed one left running (csi.host.orphans).
_owner: dict[str, str] = {}


def mark_tools(owner: str) -> None:
    """Every command from now on carries ``owner`` in its environment (csi.host.orphans)."""
    _owner[OWNER_ENV] = owner


DEFAULT_TIMEOUT = 120.0
# How long a command started after the call's deadline may run (see the module docstring).
AFTER_DEADLINE = 10.0

# The name callers used before the host errors got their own module.
HostCommandError = CommandError


def redact(text: str, sensitive: Iterable[str]) -> str:
    for secret in sensitive:
        if secret:
            text = text.replace(secret, "***")
    return text


def time_limit(tool: str, cap: float) -> tuple[float, bool]:
    """(seconds ``tool`` may run now, whether that bound is the call's deadline)."""
    left = deadline.remaining()
    if left is None or tool in RUNS_PAST_DEADLINE or left >= cap:
        return cap, False
    if left <= 0:
        return min(cap, AFTER_DEADLINE), False
    return left, True


@observed
def run(
    argv: Sequence[str],
    *,
    sensitive: Iterable[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    ok_codes: tuple[int, ...] = (0,),
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; raise a CommandError unless it exits with one of ``ok_codes``.

    ``sensitive`` lists strings (mount flags, keys) that must not appear in the error.
    ``timeout`` is the command's own cap; the RPC's remaining deadline may bound it sooner.
    """
    secrets = [s for s in sensitive if s]
    tool = argv[0]
    if tool not in HOST_TOOLS:
        raise ValueError(f"{tool} is not declared in csi.host.tools.HOST_TOOLS")
    limit, by_deadline = time_limit(tool, timeout)
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=tuple(pass_fds),
            env={**os.environ, **_owner} if _owner else None,
            start_new_session=True,  # its own process group, so a kill reaches its helpers
        )
    except FileNotFoundError:
        raise ToolMissing(f"{tool} is not installed on this node", tool=tool) from None
    with proc:
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.debug("host command killed tool=%s after_s=%.2f", tool, limit)
            if by_deadline:
                raise DeadlineReached(
                    f"{tool} was stopped after {limit:.1f}s: the call's deadline passed",
                    tool=tool,
                    seconds=limit,
                ) from None
            raise CommandTimedOut(
                f"{tool} did not finish within {limit:.0f}s", tool=tool, seconds=limit
            ) from None
    completed = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    if proc.returncode not in ok_codes:
        stderr = redact((err or out).strip(), secrets)
        last = stderr.splitlines()[-1] if stderr else "no output"
        log.debug("host command failed tool=%s rc=%d", tool, proc.returncode)
        kind = NoSpace if "No space left on device" in stderr else CommandFailed
        raise kind(
            f"{tool} failed (exit {proc.returncode}): {last[:300]}",
            tool=tool,
            returncode=proc.returncode,
            stderr=stderr,
        )
    return completed


def missing_tools(tools: Iterable[str]) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None]
