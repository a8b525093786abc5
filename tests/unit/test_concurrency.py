"""Per-key locks: a second operation on the same key is ABORTED, never queued or doubled."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from csi.errors import Aborted
from csi.layout import volume_id_for_name
from csi.locks import KeyedLocks
from csi.pb import csi_pb2
from csi.status import code_of
from tests.support.driver import RunningDriver
from tests.unit.support import create_request, on_disk


def test_second_holder_in_another_thread_is_aborted() -> None:
    locks = KeyedLocks()
    outcome: list[BaseException | None] = []

    def contender(key: str) -> None:
        try:
            with locks.hold(key):
                outcome.append(None)
        except Aborted as exc:
            outcome.append(exc)

    with locks.hold("vol-1"):
        assert locks.is_held("vol-1")
        for key in ("vol-1", "vol-2"):
            thread = threading.Thread(target=contender, args=(key,))
            thread.start()
            thread.join(timeout=5)
            assert not thread.is_alive()
    assert isinstance(outcome[0], Aborted)
    assert "vol-1" in outcome[0].message
    assert code_of(outcome[0]) == grpc.StatusCode.ABORTED
    assert outcome[1] is None
    assert not locks.is_held("vol-1")


def test_lock_released_after_error() -> None:
    locks = KeyedLocks()
    with pytest.raises(RuntimeError), locks.hold("k"):
        raise RuntimeError("boom")
    assert not locks.is_held("k")
    with locks.hold("k"):
        pass


def test_same_thread_reentry_is_aborted() -> None:
    locks = KeyedLocks()
    with locks.hold("k"), pytest.raises(Aborted), locks.hold("k"):
        pass


def test_concurrent_creates_of_one_name(driver: RunningDriver) -> None:
    expected = volume_id_for_name("pvc-race")
    barrier = threading.Barrier(16)

    def call(_: int) -> tuple[grpc.StatusCode, str]:
        barrier.wait(timeout=10)
        try:
            response = driver.client.controller.CreateVolume(create_request("pvc-race"))
        except grpc.RpcError as exc:
            return exc.code(), ""
        return grpc.StatusCode.OK, response.volume.volume_id

    for _ in range(3):  # the barrier is cyclic: every round starts all 16 calls at once
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(call, range(16)))
        codes = {code for code, _ in results}
        assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.ABORTED}
        assert grpc.StatusCode.OK in codes
        assert {vid for code, vid in results if code is grpc.StatusCode.OK} == {expected}
        assert on_disk(driver.data_dir) == ([expected], [f"{expected}.json"])
        driver.client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=expected))
        assert on_disk(driver.data_dir) == ([], [])


def test_concurrent_creates_of_many_names(driver: RunningDriver) -> None:
    names = [f"pvc-{i}" for i in range(16)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(
            pool.map(lambda n: driver.client.controller.CreateVolume(create_request(n)), names)
        )
    ids = sorted(r.volume.volume_id for r in responses)
    assert ids == sorted(volume_id_for_name(n) for n in names)
    assert on_disk(driver.data_dir)[0] == ids
