"""For test_secrets: canary values, a driver subprocess, a mount(8) shim, a recording caller.

The shim sits first on the driver's PATH. Its mode file selects what it does:
``pass`` drops every mount option holding a canary and runs the real mount; ``fail``
fails any mount whose arguments hold a canary, echoing all its arguments (as a tool
complaining about an option would); ``garbage`` fails the same way, in bytes that are
not UTF-8 (an unexpected-exception path in the driver).
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from google.protobuf.message import Message

from csi.pb import csi_pb2
from tests.reliability.hostile import methods, rpc
from tests.support.driver import driver_subprocess
from tests.support.kubelet import mount_capability

REPO = Path(__file__).resolve().parents[2]
MARK = uuid.uuid4().hex  # every canary holds it; finding it anywhere is a leak
TOKEN_KEY = "csi.storage.k8s.io/serviceAccount.tokens"


def canary(tag: str) -> str:
    return f"CANARY-{tag}-{MARK}"


SECRETS = {"password": canary("secret-value"), canary("secret-key"): "x"}
FLAGS = (canary("flag"), f"password={canary('flag-value')}")
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


SHIM = """#!{python}
import os, sys
here = os.path.dirname(os.path.abspath(__file__))
mode = open(os.path.join(here, "mode")).read().strip()
args = sys.argv[1:]
marked = any("CANARY" in a for a in args)
if marked and mode == "fail":
    sys.stderr.write("mount: unknown option in: " + " ".join(args) + "\\n")
    sys.exit(32)
if marked and mode == "garbage":
    sys.stderr.buffer.write(b"mount: \\xff\\xfe " + " ".join(args).encode() + b"\\n")
    sys.exit(32)
out = []
for i, a in enumerate(args):
    if i and args[i - 1] == "-o":
        a = ",".join(o for o in a.split(",") if "CANARY" not in o)
        if not a:
            out.pop()
            continue
    out.append(a)
os.execv({real!r}, [{real!r}] + out)
"""


class Shim:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir()
        script = directory / "mount"
        real = shutil.which("mount")
        assert real is not None
        script.write_text(SHIM.format(python=sys.executable, real=real))
        script.chmod(0o755)
        self.mode("pass")

    def mode(self, mode: str) -> None:
        (self.directory / "mode").write_text(mode)


@contextmanager
def driver_process(data: Path, log: Path, shim: Shim, log_format: str) -> Iterator[grpc.Channel]:
    """The driver as ``python -m csi`` at debug level, the shim first on its PATH."""
    with driver_subprocess(
        data, log, "--log-format", log_format, node_id="secret-node", path_first=shim.directory
    ) as client:
        yield client.channel


class Recorder:
    """Calls any CSI method by name and keeps every status, detail and trailer it got."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._calls = {m.name: rpc(channel, m) for m in methods()}
        self.returned: list[str] = []  # everything a caller was told about failures
        self.codes: list[tuple[str, grpc.StatusCode, str]] = []

    def __call__(self, method: str, request: Message) -> object | None:
        try:
            reply = self._calls[method](request, timeout=60)
        except grpc.RpcError as exc:
            details = exc.details() or ""
            self.returned += [details, repr(exc.trailing_metadata())]
            self.returned.append(exc.debug_error_string())  # type: ignore[attr-defined]
            self.codes.append((method, exc.code(), details))
            return None
        self.codes.append((method, grpc.StatusCode.OK, ""))
        return reply  # type: ignore[no-any-return]

    def code(self, method: str) -> grpc.StatusCode:
        """The status of the latest call of ``method``."""
        return next(c for m, c, _ in reversed(self.codes) if m == method)


def files_holding(root: Path, needle: str) -> list[str]:
    """Regular files under ``root`` whose bytes contain ``needle``."""
    wanted = needle.encode()
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and wanted in path.read_bytes():
            found.append(str(path))
    return found
