"""csi.volumes.quotas: the node's rule and the project IDs, without a kernel that has
project quotas (tests/guest proves the enforced side on one)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from csi.config import MIB, QuotaMode
from csi.errors import FailedPrecondition, ResourceExhausted
from csi.host import kernel, quota
from csi.host.errors import SyscallFailed
from csi.host.fs import Usage
from csi.volumes import quotas
from csi.volumes.quotas import DirectoryQuotas, ProjectIds


def charges(busy: set[int], asked: list[int]) -> object:
    def charge(path: Path, project: int) -> quota.Charge:
        asked.append(project)
        return quota.Charge(4096, 1, 0, 0) if project in busy else quota.Charge(0, 0, 0, 0)

    return charge


def test_an_id_is_neither_held_by_a_record_nor_charged_by_anyone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []
    monkeypatch.setattr(quota, "charge", charges({12}, asked))
    ids = ProjectIds(tmp_path, held=[10, 11], first=10, last=16)
    assert ids.take() == 13  # 10, 11 held by records; 12 charged by someone else
    assert asked == [12, 13]
    asked.clear()
    assert ids.take() == 14  # from where the last search ended: one reading
    assert asked == [14]


def test_ids_come_around_and_run_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quota, "charge", charges(set(), []))
    ids = ProjectIds(tmp_path, held=[], first=10, last=13)
    assert [ids.take() for _ in range(3)] == [10, 11, 12]
    with pytest.raises(ResourceExhausted, match="no free project ID"):
        ids.take()
    ids.give_back(11)
    assert ids.take() == 11


def test_detect_never_fails_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernel.FAULT_ENV, "quota:state")
    held = DirectoryQuotas(tmp_path, QuotaMode.ENFORCE)
    held.detect([])
    assert not held.enforced
    assert "cannot be read" in held.support.reason
    assert held.project_for_new_volume() is None


def test_a_forbidden_quotactl_is_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(step: str, fd: int, command: int, qid: int, arg: bytearray, *, where: str) -> None:
        raise SyscallFailed("quota:state failed: EPERM", step=step, errno=errno.EPERM)

    monkeypatch.setattr(kernel, "quotactl_fd", refused)
    support = quota.support(tmp_path)
    assert not support.enforced
    assert "CAP_SYS_ADMIN" in support.reason


def test_require_refuses_where_it_cannot_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quota, "support", lambda path: quota.Support(False, "prjquota is off"))
    required = DirectoryQuotas(tmp_path, QuotaMode.REQUIRE)
    required.detect([])
    with pytest.raises(FailedPrecondition, match="prjquota is off"):
        required.project_for_new_volume()


def test_a_volume_gets_its_share_of_inodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = Usage(1024 * MIB, 0, 0, total_inodes=65536, free_inodes=0, used_inodes=0)
    monkeypatch.setattr(quotas.fs, "usage", lambda path: usage)
    held = DirectoryQuotas(tmp_path, QuotaMode.ENFORCE)
    assert held.inodes_for(256 * MIB) == 16384  # a quarter of the bytes, of the inodes
    assert held.inodes_for(MIB) == quotas.MIN_INODES
