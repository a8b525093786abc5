"""Run host commands: argument lists only, never a shell; secrets kept out of errors."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable, Sequence

import grpc

from csi.errors import Internal
from csi.host.tools import HOST_TOOLS

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0


class HostCommandError(Internal):
    """A host command failed; ``message`` names the tool and its (redacted) complaint."""

    def __init__(self, message: str, *, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


def redact(text: str, sensitive: Iterable[str]) -> str:
    for secret in sensitive:
        if secret:
            text = text.replace(secret, "***")
    return text


def run(
    argv: Sequence[str],
    *,
    sensitive: Iterable[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    ok_codes: tuple[int, ...] = (0,),
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; raise HostCommandError unless it exits with one of ``ok_codes``.

    ``sensitive`` lists strings (mount flags, keys) that must not appear in the error.
    """
    secrets = [s for s in sensitive if s]
    tool = argv[0]
    if tool not in HOST_TOOLS:
        raise ValueError(f"{tool} is not declared in csi.host.tools.HOST_TOOLS")
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError:
        raise HostCommandError(f"{tool} is not installed on this node") from None
    except subprocess.TimeoutExpired:
        raise HostCommandError(f"{tool} did not finish within {timeout:.0f}s") from None
    if proc.returncode not in ok_codes:
        stderr = redact((proc.stderr or proc.stdout).strip(), secrets)
        last = stderr.splitlines()[-1] if stderr else "no output"
        log.debug("host command failed tool=%s rc=%d", tool, proc.returncode)
        error = HostCommandError(
            f"{tool} failed (exit {proc.returncode}): {last[:300]}",
            returncode=proc.returncode,
            stderr=stderr,
        )
        if "No space left on device" in stderr:
            error.code = grpc.StatusCode.RESOURCE_EXHAUSTED
        raise error
    return proc


def missing_tools(tools: Iterable[str]) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None]
