"""Per-volume access control (issue 8) as a process in the pod meets it: the pod's fsGroup
(VOLUME_MOUNT_GROUP), root modes set by the StorageClass, read-only publishes, and mount
options limited to the StorageClass's list.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import grpc
import pytest

from tests.integration.encryption_support import (
    ENCRYPTED,
    KEY,
    KeyedSession,
    cap_with,
    with_params,
)
from tests.support.host import mounts_at
from tests.support.kubelet import DIRECTORY, EXT4, Flavour
from tests.support.status import rpc_error

Code = grpc.StatusCode
GROUP, MEMBER, OUTSIDER_GROUP = 4242, 4243, 4343
FLAVOURS = [EXT4, DIRECTORY, ENCRYPTED]
EACH = pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.id)
MOUNTABLE = pytest.mark.parametrize("flavour", [EXT4, DIRECTORY], ids=lambda f: f.id)


def key_for(flavour: Flavour) -> str | None:
    return KEY if flavour.params.get("encryption") else None


def staged(session: KeyedSession, name: str, flavour: Flavour, flags: tuple[str, ...] = ()) -> str:
    volume = session.create_keyed(name, flavour, key_for(flavour))
    session.stage_keyed(volume, key_for(flavour), cap_with(flags=flags))
    return volume


def errno_as(uid: int, gid: int, directory: Path, name: str, *, append: bool = False) -> int:
    """Create (or append to) ``directory/name`` in a child running as ``uid``:``gid`` (its only
    group); 0 on success, else the errno. The directory is opened before privileges are
    dropped, so the test's own 0700 temporary directories do not stand in the way."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    pid = os.fork()
    if pid == 0:  # the child: only syscalls, then _exit
        code = 0
        try:
            os.setgroups([gid])
            os.setgid(gid)
            os.setuid(uid)
            flags = os.O_WRONLY | (os.O_APPEND if append else os.O_CREAT | os.O_EXCL)
            fd = os.open(name, flags, 0o664, dir_fd=dir_fd)
            os.write(fd, b"written by a pod process\n")
            os.close(fd)
        except OSError as exc:
            code = exc.errno or 255
        except BaseException:
            code = 254
        os._exit(code)
    os.close(dir_fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@EACH
def test_mount_group_gets_the_volume(session: KeyedSession, flavour: Flavour) -> None:
    volume = staged(session, "grouped", with_params(flavour, mode="0770"))
    target = session.publish_to(volume, "pod", cap_with(group=str(GROUP)))
    st = os.stat(target)
    assert st.st_gid == GROUP
    assert stat.S_IMODE(st.st_mode) == 0o2770, oct(st.st_mode)  # class mode + g=rwx + setgid

    assert errno_as(MEMBER, GROUP, target, "member.txt") == 0
    assert (target / "member.txt").stat().st_gid == GROUP, "setgid root: new files stay shared"
    assert errno_as(MEMBER, OUTSIDER_GROUP, target, "outsider.txt") == errno.EACCES
    assert not (target / "outsider.txt").exists()


@pytest.mark.parametrize("group", ["staff", "-1", "42a", "4294967295"])
def test_mount_group_must_be_a_numeric_id(session: KeyedSession, group: str) -> None:
    volume = staged(session, "bad-group", EXT4)
    target = session.kubelet.target("pod")
    error = rpc_error(lambda: session.publish_to(volume, "pod", cap_with(group=group)))
    assert error.code() is Code.INVALID_ARGUMENT, error.details()
    assert "volume_mount_group" in (error.details() or "")
    assert mounts_at(target) == []
    assert not target.exists()


def test_mount_group_reaches_what_the_volume_already_holds(session: KeyedSession) -> None:
    volume = staged(session, "existing", EXT4)
    first = session.publish_to(volume, "first")
    (first / "sub").mkdir(mode=0o755)
    (first / "sub" / "log.txt").write_text("written before the group was set\n")
    session.kubelet.unpublish(volume, first)

    target = session.publish_to(volume, "second", cap_with(group=str(GROUP)))
    assert errno_as(MEMBER, GROUP, target / "sub", "log.txt", append=True) == 0
    assert errno_as(MEMBER, GROUP, target / "sub", "new.txt") == 0


def test_mode_parameter_on_new_volumes(session: KeyedSession) -> None:
    directory = staged(session, "dir-0750", with_params(DIRECTORY, mode="0750"))
    assert stat.S_IMODE(session.kubelet.directory(directory).stat().st_mode) == 0o750
    published = session.publish_to(directory, "dir-pod")  # a directory's stage mounts nothing
    assert stat.S_IMODE(published.stat().st_mode) == 0o750

    loop = staged(session, "ext4-0700", with_params(EXT4, mode="0700"))
    staging = session.kubelet.staging(loop)
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700
    # Only a new volume gets the class's mode: a later change is the user's and is kept.
    (staging / "app.conf").write_text("the pod's data\n")
    os.chmod(staging, 0o755)
    session.kubelet.unstage(loop, staging)
    session.stage_keyed(loop, None, cap_with())
    assert stat.S_IMODE(staging.stat().st_mode) == 0o755


def test_mode_parameter_leaves_a_users_mode_on_an_empty_volume(session: KeyedSession) -> None:
    loop = staged(session, "ext4-empty", with_params(EXT4, mode="0700"))
    staging = session.kubelet.staging(loop)
    os.chmod(staging, 0o755)
    session.kubelet.unstage(loop, staging)
    session.stage_keyed(loop, None, cap_with())
    assert stat.S_IMODE(staging.stat().st_mode) == 0o755


@pytest.mark.parametrize("mode", ["0999", "rwx", "17777", "-0700"])
def test_mode_parameter_must_be_octal_permissions(session: KeyedSession, mode: str) -> None:
    error = rpc_error(lambda: session.create_keyed("bad-mode", with_params(EXT4, mode=mode), None))
    assert error.code() is Code.INVALID_ARGUMENT, error.details()
    session.nothing_created()


@EACH
def test_read_only_publish_refuses_writes(session: KeyedSession, flavour: Flavour) -> None:
    volume = staged(session, "ro", flavour)
    writer = session.publish_to(volume, "writer", cap_with())
    reader = session.publish_to(volume, "reader", cap_with(), readonly=True)
    (writer / "shared.txt").write_text("from the writer")
    assert (reader / "shared.txt").read_text() == "from the writer"
    for attempt in (
        lambda: (reader / "new.txt").write_text("x"),
        lambda: (reader / "dir").mkdir(),
        lambda: os.open(reader / "shared.txt", os.O_WRONLY | os.O_APPEND),
    ):
        with pytest.raises(OSError, match="Read-only") as caught:
            attempt()
        assert caught.value.errno == errno.EROFS


@MOUNTABLE
def test_allowed_mount_options(session: KeyedSession, flavour: Flavour) -> None:
    limited = with_params(flavour, allowedMountOptions="noatime,nodev")
    volume = session.create_keyed("limited", limited, None)
    staging = session.kubelet.staging(volume)

    error = rpc_error(lambda: session.stage_keyed(volume, None, cap_with(flags=("exec",))))
    assert error.code() is Code.INVALID_ARGUMENT, error.details()
    assert "exec" in (error.details() or "")
    assert mounts_at(staging) == []

    session.stage_keyed(volume, None, cap_with(flags=("noatime",)))
    if flavour.fs_type:  # a directory's stage mounts nothing
        (mount,) = mounts_at(staging)
        assert "noatime" in mount.options, mount.options

    target = session.kubelet.target("pod")
    error = rpc_error(lambda: session.publish_to(volume, "pod", cap_with(flags=("exec",))))
    assert error.code() is Code.INVALID_ARGUMENT, error.details()
    assert mounts_at(target) == []
    assert not target.exists()

    session.publish_to(volume, "pod", cap_with(flags=("noatime", "nodev")))
    (mount,) = mounts_at(target)
    assert {"noatime", "nodev"} <= set(mount.options), mount.options
