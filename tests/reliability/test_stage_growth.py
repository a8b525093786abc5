"""NodeStageVolume finishes the growth a volume's record asks for, and a crash during it
converges: the image grows first (durably), the filesystem before it is mounted."""

from __future__ import annotations

import os

import pytest

from tests.integration.support import record_growth_behind_the_driver
from tests.reliability.lifecycle import EXT4, GROWTH, Life
from tests.support.driver import DriverProcess, crash_during
from tests.support.invariants import assert_consistent, image_path


@pytest.mark.parametrize("point", ["stage:attached", "stage:mounted"])
def test_crash_while_stage_finishes_growth(driver_process: DriverProcess, point: str) -> None:
    life = Life(driver_process, EXT4)
    driver_process.start()
    for op in ("create", "stage", "publish", "write"):
        life.do(op)
    st = os.statvfs(life.target)
    life.fs_bytes_before_growth = st.f_blocks * st.f_frsize
    for op in ("unpublish", "unstage"):
        life.do(op)
    assert driver_process.stop() == 0
    life.size += GROWTH
    record_growth_behind_the_driver(driver_process.data_dir, life.volume_id, life.size)

    driver_process.start(fault=point)
    crash_during(driver_process, lambda: life.do("stage"))
    image = image_path(driver_process.data_dir, life.volume_id)
    assert image.stat().st_size == life.size, "the image grows before anything else"

    driver_process.start()
    assert_consistent(driver_process.data_dir, driver_process.kubelet_root, settled=False)
    life.do("stage")  # the kubelet's retry
    life.do("publish")
    life.verify("publish")
    life.verify_growth()  # image, device and filesystem all at the recorded size
    life.finish()
    assert driver_process.stop() == 0
