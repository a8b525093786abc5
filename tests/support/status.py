"""What a gRPC call ended with, and assertions on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import pytest

OK = grpc.StatusCode.OK


def status(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """Run ``call``; its status code and details (OK and "" if it succeeds)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return OK, ""


def status_of(call: Callable[[], object]) -> grpc.StatusCode:
    """Run ``call``; the status code it ended with."""
    return status(call)[0]


def error_of(call: Callable[[], object]) -> grpc.RpcError | None:
    """The RpcError ``call`` fails with, or None if it succeeds."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc
    return None


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """The RpcError ``call`` fails with (code() and details()); fails the test if it succeeds."""
    error = error_of(call)
    if error is None:
        pytest.fail("the call succeeded; an error was expected")
    return error


@dataclass
class Refusal:
    """Filled in when a ``raises_code`` block ends: the details of the expected error."""

    details: str = ""


@contextmanager
def raises_code(code: grpc.StatusCode) -> Iterator[Refusal]:
    """The block must end with an RpcError of status ``code``."""
    refusal = Refusal()
    with pytest.raises(grpc.RpcError) as caught:
        yield refusal
    error = caught.value
    assert error.code() == code, f"{error.code()} ({error.details()}), expected {code}"
    refusal.details = error.details() or ""
