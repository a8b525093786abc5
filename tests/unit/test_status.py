"""csi.status: one table from every error the driver raises to a status code and message."""

from __future__ import annotations

import ast
import errno
from pathlib import Path

import grpc
import pytest

from csi import errors
from csi.host import errors as host
from csi.status import STATUS_OF, code_of, failure_of

Code = grpc.StatusCode
HOST_PACKAGE = Path(__file__).resolve().parents[2] / "csi" / "host"


def subclasses(base: type[Exception]) -> list[type[Exception]]:
    found = [base]
    for sub in base.__subclasses__():
        found += subclasses(sub)
    return found


@pytest.mark.parametrize(
    "error", [*subclasses(errors.CsiError), *subclasses(host.HostError)], ids=lambda e: e.__name__
)
def test_every_error_type_has_its_own_entry(error: type[Exception]) -> None:
    assert error in STATUS_OF, f"{error.__name__} falls back to a base class's code"


@pytest.mark.parametrize("error", subclasses(errors.CsiError)[1:], ids=lambda e: e.__name__)
def test_domain_errors_become_the_code_they_are_named_for(error: type[errors.CsiError]) -> None:
    snake = "".join(f"_{c}" if c.isupper() else c for c in error.__name__).lstrip("_").upper()
    failure = failure_of(error("what happened"), "CreateVolume")
    assert (failure.code, failure.message, failure.ref) == (
        getattr(Code, snake),
        "what happened",
        None,
    )


def test_domain_errors_carry_no_status_code() -> None:
    for error in subclasses(errors.CsiError):
        assert not hasattr(error, "code"), error


def failed(message: str, kind: type[host.CommandFailed] = host.CommandFailed) -> Exception:
    return kind(message, tool="mkfs.ext4", returncode=1, stderr=message)


def timed_out(kind: type[host.CommandTimedOut]) -> host.CommandTimedOut:
    return kind("mount was stopped", tool="mount", seconds=1.0)


NO_SPACE = "mkfs.ext4 failed (exit 1): No space left on device"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (failed("mkfs.ext4 failed (exit 1): bad"), Code.INTERNAL),
        (failed(NO_SPACE, host.NoSpace), Code.RESOURCE_EXHAUSTED),
        (host.ToolMissing("mkfs.xfs is not installed", tool="mkfs.xfs"), Code.INTERNAL),
        (timed_out(host.CommandTimedOut), Code.INTERNAL),
        (timed_out(host.DeadlineReached), Code.DEADLINE_EXCEEDED),
        (host.LoopDeviceUnreadable("cannot identify /dev/loop3"), Code.INTERNAL),
        (host.FormatRefused("refusing to format: x already holds ext4"), Code.FAILED_PRECONDITION),
        (host.UnsupportedFilesystem("unsupported filesystem btrfs"), Code.FAILED_PRECONDITION),
        (host.GrowNeedsPrivilege("needs CAP_SYS_RESOURCE"), Code.FAILED_PRECONDITION),
        (host.KeyMismatch("policy of version 1"), Code.FAILED_PRECONDITION),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.name,
)
def test_host_errors_keep_their_message(exc: host.HostError, code: grpc.StatusCode) -> None:
    failure = failure_of(exc, "NodeStageVolume")
    assert (failure.code, failure.message, failure.ref) == (code, exc.message, None)


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_resource_exhausted(number: int) -> None:
    exc = OSError(number, "No space left on device", "/data/state/volumes/secret-path.json")
    failure = failure_of(exc, "CreateVolume")
    assert failure.code is Code.RESOURCE_EXHAUSTED
    assert failure.message == "no space left in the driver's data directory"
    assert "secret-path" not in failure.message


@pytest.mark.parametrize(
    "exc",
    [OSError(errno.EIO, "I/O error", "/x/secret"), KeyError("secret"), RuntimeError("secret")],
    ids=lambda e: type(e).__name__,
)
def test_unexpected_errors_are_internal_with_a_reference(exc: Exception) -> None:
    failure = failure_of(exc, "DeleteVolume")
    assert failure.code is Code.INTERNAL
    assert failure.ref
    assert failure.message == f"internal error (ref {failure.ref}); see driver log"
    assert code_of(exc) is None


def test_not_implemented_names_the_method() -> None:
    failure = failure_of(NotImplementedError(), "ControllerPublishVolume")
    assert (failure.code, failure.message) == (
        Code.UNIMPLEMENTED,
        "ControllerPublishVolume is not implemented",
    )


@pytest.mark.parametrize("module", sorted(HOST_PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_host_layer_imports_nothing_above_it(module: Path) -> None:
    """No gRPC and no domain errors under csi/host/: it reports in its own terms."""
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] != "grpc", f"{module.name} imports {name}"
            if name.split(".")[0] == "csi":
                assert name.startswith("csi.host"), f"{module.name} imports {name}"
