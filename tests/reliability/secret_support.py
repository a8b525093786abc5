"""For test_secrets: canary values, a driver subprocess run in phases, a tool shim, and a
caller that records everything it is told.

Mounts, unmounts and loop devices are system calls behind csi.host.kernel, so no mount(8)
shim can see or fail them. Their failures come from the seam's own fault injection
(``CSI_FAIL_SYSCALL``), which the driver reads from its environment at each call; the
driver's environment is fixed when it starts, so each phase of faults is a restart
(``SecretDriver.phase``). Forked tools remain (mkfs.ext4, resize2fs, blkid, e2fsck); a
mkfs.ext4 shim that writes bytes which are not UTF-8 takes the driver's
unexpected-exception path, because ``csi.host.run`` decodes tool output strictly.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from csi.host.kernel import FAULT_ENV
from csi.pb import csi_pb2
from tests.reliability.hostile import methods, rpc
from tests.support.driver import DriverProcess
from tests.support.kubelet import mount_capability

MARK = uuid.uuid4().hex  # every canary holds it; finding it anywhere is a leak
TOKEN_KEY = "csi.storage.k8s.io/serviceAccount.tokens"


def canary(tag: str) -> str:
    return f"CANARY-{tag}-{MARK}"


SECRETS = {"password": canary("secret-value"), canary("secret-key"): "x"}
# For binds (every publish): the canaries are filesystem options, which a bind ignores
# (csi.host.mountopts.for_bind), and nosuid is a per-mount flag, so the bind is followed by
# a remount. On an ext4 stage the kernel refuses the canaries (EINVAL -> INVALID_ARGUMENT).
FLAGS = ("nosuid", canary("flag"), f"password={canary('flag-value')}")
# For an ext4 stage the kernel accepts: a journaled quota file name is a free-form value
# ext4 takes (and shows in /proc/self/mountinfo), while comment= and x-* options are
# consumed by the option parser, as mount(8) consumes them, and reach no call.
FS_FLAGS = (
    f"usrjquota={canary('quota-file')}",
    "jqfmt=vfsv0",
    f"comment={canary('comment')}",
    f"x-{canary('x')}",
)
# Refused by the option parser before any call: the message names the option by position.
PARSER_REFUSED = ("nosuid", f"offset={canary('offset')}")
TOKENS = json.dumps({"api": {"token": canary("token"), "expirationTimestamp": "2030-01-01"}})
CONTEXT = {TOKEN_KEY: TOKENS}


def cap(flags: tuple[str, ...] = FLAGS) -> csi_pb2.VolumeCapability:
    return mount_capability(flags=flags)


def secret_fields() -> set[tuple[str, str]]:
    """(message, field) for every field the CSI proto marks csi_secret."""
    marked: set[tuple[str, str]] = set()

    def visit(message: object) -> None:
        for field in message.fields:  # type: ignore[attr-defined]
            if field.GetOptions().Extensions[csi_pb2.csi_secret]:
                marked.add((message.full_name, field.name))  # type: ignore[attr-defined]
        for nested in message.nested_types:  # type: ignore[attr-defined]
            visit(nested)

    for message in csi_pb2.DESCRIPTOR.message_types_by_name.values():
        visit(message)
    return marked


GARBAGE_TOOL = """#!{python}
import sys
sys.stderr.buffer.write(b"{tool}: \\xff\\xfe bad superblock \\xc3\\x28\\n")
sys.exit(1)
"""


def garbage_shim(directory: Path, tool: str = "mkfs.ext4") -> Path:
    """A directory holding ``tool``, which fails writing bytes that are not UTF-8."""
    directory.mkdir(exist_ok=True)
    script = directory / tool
    script.write_text(GARBAGE_TOOL.format(python=sys.executable, tool=tool))
    script.chmod(0o755)
    return directory


class Recorder:
    """Calls any CSI method by name and keeps every status, detail and trailer it got."""

    def __init__(self) -> None:
        self._calls: dict[str, Callable[..., Any]] = {}
        self.returned: list[str] = []  # everything a caller was told about failures
        self.codes: list[tuple[str, grpc.StatusCode, str]] = []

    def bind(self, channel: grpc.Channel) -> None:
        """Send further calls over ``channel`` (the driver restarted)."""
        self._calls = {m.name: rpc(channel, m) for m in methods()}

    def __call__(self, method: str, request: Message) -> object | None:
        try:
            reply: object = self._calls[method](request, timeout=60)
        except grpc.RpcError as exc:
            details = exc.details() or ""
            self.returned += [details, repr(exc.trailing_metadata())]
            self.returned.append(exc.debug_error_string())  # type: ignore[attr-defined]
            self.codes.append((method, exc.code(), details))
            return None
        self.codes.append((method, grpc.StatusCode.OK, ""))
        return reply

    def code(self, method: str) -> grpc.StatusCode:
        """The status of the latest call of ``method``."""
        return next(c for m, c, _ in reversed(self.codes) if m == method)


class SecretDriver:
    """The driver as ``python -m csi`` at debug level, restarted for each phase.

    A phase names the seam's steps to fail (``CSI_FAIL_SYSCALL``) and a tool shim directory
    to put first on PATH; both hold until the next phase. Every start logs to a file of its
    own under ``log_dir``; ``log_text`` is all of them.
    """

    def __init__(self, data: Path, log_dir: Path, log_format: str, call: Recorder) -> None:
        self.process = DriverProcess(data, log_dir, node_id="secret-node")
        self.log_format = log_format
        self.call = call

    def phase(self, fail: str = "", path_first: Path | None = None) -> None:
        if self.process.proc is not None:
            assert self.process.stop() == 0, self.process.log()
        with pytest.MonkeyPatch.context() as env:
            # DriverProcess.start copies this process's environment for the driver.
            if fail:
                env.setenv(FAULT_ENV, fail)
            else:
                env.delenv(FAULT_ENV, raising=False)
            client = self.process.start(
                path_prefix=path_first, args=("--log-format", self.log_format)
            )
        self.call.bind(client.channel)

    def stop(self) -> None:
        try:
            if self.process.proc is not None:
                assert self.process.stop() == 0, self.process.log()
        finally:
            self.process.kill()

    def log_text(self) -> str:
        return self.process.all_logs()


@contextmanager
def secret_driver(
    data: Path, log_dir: Path, log_format: str, call: Recorder
) -> Iterator[SecretDriver]:
    """A SecretDriver in its first phase (no faults, no shim); stopped at the end."""
    driver = SecretDriver(data, log_dir, log_format, call)
    try:
        driver.phase()
        yield driver
    finally:
        driver.stop()


def files_holding(root: Path, needle: str) -> list[str]:
    """Regular files under ``root`` whose bytes contain ``needle``."""
    wanted = needle.encode()
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and wanted in path.read_bytes():
            found.append(str(path))
    return found
