"""What an unprivileged host user (or a pod's non-root user) can do to paths: a forked child
that drops to that user's uid and groups tries each operation and reports the errno (0 for
success) through a pipe."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
DENIED = {errno.EPERM, errno.EACCES}
CREATED = "made-by-another-user"  # the file a "create" makes


def _attempt(op: str, path: str) -> int:
    """One operation, run in the child as the other user; its errno, 0 for success."""
    try:
        if op == "list":
            os.listdir(path)
        elif op == "read":
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW))
        elif op == "write":
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW))
        elif op == "create":
            fd = os.open(os.path.join(path, CREATED), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"written\n")
            os.close(fd)
        elif op == "mkdir":
            os.mkdir(os.path.join(path, CREATED + "-dir"))
        elif op == "connect":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
                unix.connect(path)
        else:
            return -1
        return 0
    except OSError as exc:
        return exc.errno or -2


DIRECTORY_OPS = ("list", "read", "create", "mkdir")
FILE_OPS = ("read", "write")


@dataclass(frozen=True)
class Outcome:
    op: str
    path: str
    errno: int


def ops_for(path: Path) -> tuple[str, ...]:
    """What to try on ``path``, by what it is (looked at as root, not following links)."""
    mode = os.lstat(path).st_mode
    if stat.S_ISDIR(mode):
        return DIRECTORY_OPS
    if stat.S_ISSOCK(mode):
        return ("connect",)
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
        return FILE_OPS
    return ()


def attempts(
    paths: Iterable[Path], *, uid: int = NOBODY, gids: Sequence[int] = (NOBODY,)
) -> list[Outcome]:
    """Every operation ``ops_for`` each path, tried as ``uid`` with only ``gids``."""
    tries = [(op, str(path)) for path in paths for op in ops_for(path)]
    return tried(tries, uid=uid, gids=gids)


def tried(tries: Sequence[tuple[str, str]], *, uid: int, gids: Sequence[int]) -> list[Outcome]:
    """Each (operation, path) tried in a child process that runs as ``uid`` with only
    ``gids`` (the first its primary group); only syscalls there, then _exit."""
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            os.close(reading)
            os.setgroups(list(gids))
            os.setgid(gids[0])
            os.setuid(uid)
            os.chdir("/")
            report = json.dumps([_attempt(op, path) for op, path in tries]).encode()
            while report:
                report = report[os.write(writing, report) :]
        except BaseException:
            code = 1
        os._exit(code)
    os.close(writing)
    chunks = []
    with os.fdopen(reading, "rb") as pipe:
        chunks.append(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the other user's process failed"
    errnos = json.loads(b"".join(chunks))
    return [Outcome(op, path, code) for (op, path), code in zip(tries, errnos, strict=True)]


def allowed(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """The attempts that were not refused for lack of permission (EACCES or EPERM)."""
    return [o for o in outcomes if o.errno not in DENIED]


def everything_under(root: Path) -> list[Path]:
    """``root`` and every path beneath it (mounted volumes included), never through links."""
    found = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        found += [here / name for name in (*dirnames, *filenames)]
    return found


@contextmanager
def traversable(path: Path) -> Iterator[None]:
    """``path`` and its parents up to the temporary directory made 0755 (pytest makes its
    own 0700, which would refuse other users before anything the driver made is tried);
    their modes are put back afterwards."""
    undo: list[tuple[Path, int]] = []
    try:
        for each in [path, *path.parents]:
            if each in (Path(tempfile.gettempdir()), Path("/")):
                break
            undo.append((each, stat.S_IMODE(each.stat().st_mode)))
            each.chmod(0o755)
        yield
    finally:
        for each, mode in reversed(undo):
            each.chmod(mode)
