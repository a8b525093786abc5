"""Space and volume limits hold, also under concurrent creates of different names."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from csi.pb import csi_pb2
from tests.support.driver import running_driver
from tests.support.kubelet import block_capability, mount_capability
from tests.support.status import raises_code

MIB = 1024 * 1024


def create_request(name: str, size: int, *, block: bool) -> csi_pb2.CreateVolumeRequest:
    cap = block_capability() if block else mount_capability()
    params = {"volumeType": "loop"} if block else {"volumeType": "directory"}
    return csi_pb2.CreateVolumeRequest(
        name=name,
        volume_capabilities=[cap],
        parameters=params,
        capacity_range=csi_pb2.CapacityRange(required_bytes=size),
    )


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.mark.parametrize("overcommit", [False, True])
def test_sparse_images_are_not_promised_twice(tmp_path: Path, overcommit: bool) -> None:
    """Two block volumes of 60% of the free space each: the second only with --overcommit."""
    with running_driver(tmp_path / "data", overcommit=overcommit) as running:
        size = free_bytes(running.data_dir) * 6 // 10 // MIB * MIB
        controller = running.client.controller
        first = controller.CreateVolume(create_request("first", size, block=True)).volume
        try:
            second = None
            if overcommit:
                second = controller.CreateVolume(create_request("second", size, block=True))
            else:
                with raises_code(grpc.StatusCode.RESOURCE_EXHAUSTED):
                    controller.CreateVolume(create_request("second", size, block=True))
            capacity = controller.GetCapacity(csi_pb2.GetCapacityRequest()).available_capacity
            if not overcommit:
                assert capacity < size, "GetCapacity still offers the space promised to 'first'"
        finally:
            if second is not None:
                controller.DeleteVolume(
                    csi_pb2.DeleteVolumeRequest(volume_id=second.volume.volume_id)
                )
            controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=first.volume_id))


def test_concurrent_creates_respect_the_volume_limit(tmp_path: Path) -> None:
    with running_driver(tmp_path / "data", max_volumes_per_node=3, workers=16) as running:
        controller = running.client.controller

        def create(i: int) -> grpc.StatusCode:
            try:
                controller.CreateVolume(create_request(f"pvc-{i}", MIB, block=False))
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return]
            return grpc.StatusCode.OK

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(create, range(12)))
        assert codes.count(grpc.StatusCode.OK) == 3, codes
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        records = list((running.data_dir / "state" / "volumes").glob("*.json"))
        assert len(records) == 3
