"""--directory-quota where the data root's filesystem has no project quotas on (this host's
kernel has none; tests/guest proves the enforced side on a kernel that has them)."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from csi.host import quota
from tests.support.driver import running_driver
from tests.support.kubelet import DIRECTORY, EXT4, MIB, Kubelet
from tests.support.status import raises_code


@pytest.fixture(autouse=True)
def _no_quotas_here(tmp_path: Path) -> None:
    if quota.support(tmp_path).enforced:
        pytest.skip("this filesystem has project quotas on: tests/guest covers it")


def test_enforce_falls_back_to_unheld_volumes_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with running_driver(tmp_path / "data") as running:
        kubelet = Kubelet(running.client, tmp_path / "kubelet", running.data_dir)
        first = kubelet.create("first", DIRECTORY, 8 * MIB)
        kubelet.create("second", DIRECTORY, 8 * MIB)
        record = running.driver.volumes.store.get(first)
        assert record is not None
        assert record.project_id is None
        assert not running.driver.volumes.quotas.enforced
    told = [r.getMessage() for r in caplog.records if "event=directory_quota" in r.getMessage()]
    assert len(told) == 1, told
    assert "enforced=false" in told[0]
    assert "prjquota" in told[0]


def test_require_refuses_directory_volumes_and_names_the_fix(tmp_path: Path) -> None:
    with running_driver(tmp_path / "data", directory_quota="require") as running:
        kubelet = Kubelet(running.client, tmp_path / "kubelet", running.data_dir)
        with raises_code(grpc.StatusCode.FAILED_PRECONDITION) as refused:
            kubelet.create("held", DIRECTORY, 8 * MIB)
        assert "--directory-quota=require" in refused.details
        assert "prjquota" in refused.details
        assert running.driver.volumes.store.all() == []
        assert list((running.data_dir / "volumes").iterdir()) == []
        kubelet.create("image", EXT4)  # a loop volume holds its size itself


def test_off_never_asks_the_filesystem(tmp_path: Path) -> None:
    with running_driver(tmp_path / "data", directory_quota="off") as running:
        quotas = running.driver.volumes.quotas
        assert quotas.support.reason == "--directory-quota=off"
        kubelet = Kubelet(running.client, tmp_path / "kubelet", running.data_dir)
        record = running.driver.volumes.store.get(kubelet.create("plain", DIRECTORY, 8 * MIB))
        assert record is not None
        assert record.project_id is None
