"""Shared by the hostile-caller tests (races, bad input, secrets, fuzz): parameter maps,
a canary tree no request may touch, racing calls, and any CSI method by its descriptor.

Not a conftest: test modules import what they need. The caller (``Kubelet``), status
helpers, host probes and invariants are the tiers' shared ones, in tests/support.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from csi.pb import csi_pb2
from tests.support.status import status_of

EXT4 = {"volumeType": "loop", "fsType": "ext4"}
DIRECTORY = {"volumeType": "directory"}
Entry = tuple[int, int, int, str]  # mode, size, mtime_ns, content hash or link target


def make_canary(path: Path) -> Path:
    """A small tree outside the data root that no request may create, change or remove."""
    (path / "sub" / "deeper").mkdir(parents=True)
    (path / "empty").mkdir()
    (path / "a.txt").write_text("canary a\n")
    (path / "b.bin").write_bytes(bytes(range(256)) * 16)
    (path / "sub" / "c.txt").write_text("canary c\n")
    (path / "sub" / "deeper" / "d.txt").write_text("canary d\n")
    return path


def listing(root: Path, skip: Path | None = None) -> dict[str, Entry]:
    """Every entry under ``root`` (itself included), symlinks not followed."""
    found: dict[str, Entry] = {}

    def visit(path: Path) -> None:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            digest = os.readlink(path)
        else:
            digest = ""
        found[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
        if stat.S_ISDIR(st.st_mode):
            for child in sorted(os.listdir(path)):
                if skip is None or path / child != skip:
                    visit(path / child)

    visit(root)
    return found


def names_under(root: Path, skip: Path | None = None) -> set[str]:
    return set(listing(root, skip)) if root.exists() else set()


def race(*calls: Callable[[], object], stagger: float = 0.0) -> list[grpc.StatusCode]:
    """Start the calls together from their own threads, the i-th ``i * stagger`` seconds
    late (rounds vary it to reach every interleaving); their status codes, in order."""
    barrier = threading.Barrier(len(calls))

    def go(index: int) -> grpc.StatusCode:
        barrier.wait(timeout=30)
        time.sleep(index * stagger)
        return status_of(calls[index])

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(go, range(len(calls))))


def rpc(channel: grpc.Channel, method: MethodDescriptor) -> Callable[..., Any]:
    """A callable for any CSI method, found through the service descriptors."""
    request = getattr(csi_pb2, method.input_type.name)
    response = getattr(csi_pb2, method.output_type.name)
    path = f"/csi.v1.{method.containing_service.name}/{method.name}"
    make = channel.unary_stream if method.server_streaming else channel.unary_unary
    call = make(path, request.SerializeToString, response.FromString)
    if not method.server_streaming:
        return call
    return lambda req, **kw: list(call(req, **kw))


def methods(*services: str) -> list[MethodDescriptor]:
    names = services or tuple(csi_pb2.DESCRIPTOR.services_by_name)
    return [m for s in names for m in csi_pb2.DESCRIPTOR.services_by_name[s].methods]


def new_request(method: MethodDescriptor) -> Message:
    message: Message = getattr(csi_pb2, method.input_type.name)()
    return message
