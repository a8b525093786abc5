"""csi.host.run: commands bounded by the RPC's deadline and their own cap, typed failures."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi.host import deadline
from csi.host.errors import (
    CommandFailed,
    CommandTimedOut,
    DeadlineReached,
    NoSpace,
    ToolMissing,
)
from csi.host.run import AFTER_DEADLINE, run, time_limit
from csi.interceptors import RpcInterceptor
from csi.readiness import Readiness


class Shims:
    """Scripts first on PATH under the names of declared host tools."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        directory.mkdir()
        self.directory = directory
        monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")

    def put(self, tool: str, body: str) -> None:
        shim = self.directory / tool
        shim.write_text(f"#!/bin/sh\n{body}\n")
        shim.chmod(0o755)


@pytest.fixture
def shims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shims:
    return Shims(tmp_path / "shims", monkeypatch)


def sleeper(shims: Shims, pid_file: Path) -> None:
    """blkid that starts a helper (its own child) and waits for it: both must be killed."""
    shims.put("blkid", f"sleep 30 &\necho $! > {pid_file}\nwait")


def gone(pid: int, within: float = 3.0) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as exited)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_a_command_past_the_deadline_is_killed_in_time(shims: Shims, tmp_path: Path) -> None:
    pid_file = tmp_path / "helper.pid"
    sleeper(shims, pid_file)
    started = time.monotonic()
    with deadline.call_deadline(0.5), pytest.raises(DeadlineReached) as caught:
        run(["blkid"])
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 3, elapsed
    assert caught.value.tool == "blkid"
    assert "deadline" in caught.value.message
    assert gone(int(pid_file.read_text())), "the command's helper outlived the kill"


def test_without_a_deadline_the_cap_applies(shims: Shims, tmp_path: Path) -> None:
    sleeper(shims, tmp_path / "helper.pid")
    with pytest.raises(CommandTimedOut) as caught:
        run(["blkid"], timeout=0.3)
    assert not isinstance(caught.value, DeadlineReached)
    assert caught.value.message == "blkid did not finish within 0s"


def test_a_deadline_further_than_the_cap_leaves_the_cap(shims: Shims, tmp_path: Path) -> None:
    sleeper(shims, tmp_path / "helper.pid")
    with deadline.call_deadline(60), pytest.raises(CommandTimedOut) as caught:
        run(["blkid"], timeout=0.3)
    assert not isinstance(caught.value, DeadlineReached)


def test_time_limits() -> None:
    assert time_limit("mount", 120) == (120, False)  # outside an RPC
    with deadline.call_deadline(5):
        limit, by_deadline = time_limit("mount", 120)
        assert by_deadline
        assert 4 < limit <= 5
        assert time_limit("mount", 2) == (2, False)
        assert time_limit("resize2fs", 120) == (120, False)  # never cut short mid-resize
    with deadline.call_deadline(0):
        # past the deadline: rollbacks still run, briefly
        assert time_limit("umount", 120) == (AFTER_DEADLINE, False)
    assert deadline.remaining() is None


def test_a_quick_command_within_the_deadline_succeeds(shims: Shims) -> None:
    shims.put("blkid", "echo ext4")
    with deadline.call_deadline(10):
        assert run(["blkid"]).stdout == "ext4\n"


def test_failures_are_typed_and_redacted(shims: Shims) -> None:
    shims.put("blkid", "echo 'blkid: bad option pass=hunter2' >&2; exit 32")
    with pytest.raises(CommandFailed) as caught:
        run(["blkid"], sensitive=["pass=hunter2"])
    error = caught.value
    assert not isinstance(error, NoSpace)
    assert (error.tool, error.returncode) == ("blkid", 32)
    assert error.message == "blkid failed (exit 32): blkid: bad option ***"
    assert "hunter2" not in error.stderr


def test_a_full_disk_is_no_space(shims: Shims) -> None:
    shims.put("mkfs.ext4", "echo 'mkfs.ext4: No space left on device while writing' >&2; exit 1")
    with pytest.raises(NoSpace, match=r"mkfs\.ext4 failed"):
        run(["mkfs.ext4"])


def test_a_missing_tool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing, match="xfs_growfs is not installed"):
        run(["xfs_growfs"])


def test_undeclared_programs_are_refused() -> None:
    with pytest.raises(ValueError, match="not declared"):
        run(["sh", "-c", "true"])


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self, remaining: float | None) -> None:
        self._remaining = remaining
        self.status: tuple[grpc.StatusCode, str] | None = None

    def time_remaining(self) -> float | None:
        return self._remaining

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        raise Aborted


def serve(inner: Callable[[Any, Any], Any], context: Any) -> None:
    behaviour = RpcInterceptor(Readiness())._wrap(inner, "NodeStageVolume", gated=False)
    with pytest.raises(Aborted):
        behaviour(object(), context)


def test_the_interceptor_passes_the_rpc_deadline_to_commands(shims: Shims, tmp_path: Path) -> None:
    pid_file = tmp_path / "helper.pid"
    sleeper(shims, pid_file)
    context = FakeContext(remaining=0.5)
    started = time.monotonic()
    serve(lambda _request, _context: run(["blkid"]), context)
    assert time.monotonic() - started < 3
    assert context.status is not None
    assert context.status[0] is grpc.StatusCode.DEADLINE_EXCEEDED, context.status
    assert "blkid" in context.status[1]
    assert gone(int(pid_file.read_text()))
    assert deadline.remaining() is None, "the deadline leaked out of the call"


def test_a_tool_that_runs_out_of_space_is_resource_exhausted(shims: Shims) -> None:
    shims.put("mkfs.xfs", "echo 'mkfs.xfs: pwrite failed: No space left on device' >&2; exit 1")
    context = FakeContext(remaining=None)
    serve(lambda _request, _context: run(["mkfs.xfs"]), context)
    assert context.status == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "mkfs.xfs failed (exit 1): mkfs.xfs: pwrite failed: No space left on device",
    )


def test_a_real_server_kills_the_command_when_the_callers_deadline_ends(
    shims: Shims, tmp_path: Path
) -> None:
    """Over gRPC: the client's timeout reaches run() through context.time_remaining()."""
    pid_file = tmp_path / "helper.pid"
    sleeper(shims, pid_file)

    def stage(_request: bytes, _context: grpc.ServicerContext) -> bytes:
        run(["blkid"])
        return b""

    handler = grpc.method_handlers_generic_handler(
        "csi.v1.Node", {"NodeStageVolume": grpc.unary_unary_rpc_method_handler(stage)}
    )
    readiness = Readiness()
    readiness.mark_ready()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2), interceptors=[RpcInterceptor(readiness)]
    )
    server.add_generic_rpc_handlers((handler,))
    socket = tmp_path / "csi.sock"
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    try:
        with grpc.insecure_channel(f"unix://{socket}") as channel:
            call = channel.unary_unary("/csi.v1.Node/NodeStageVolume")
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                call(b"", timeout=1.0)
            assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            end = time.monotonic() + 5
            while not pid_file.exists() and time.monotonic() < end:
                time.sleep(0.05)
            assert gone(int(pid_file.read_text()), within=3.0), "command outlived the call"
            assert time.monotonic() - started < 5
    finally:
        server.stop(grace=None)
