"""One volume's lifecycle (create, stage, publish, write 1 MiB with fsync, unpublish,
unstage, delete), through a CSI driver or as the same host work done with plain commands (the
floor), each step timed."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_drivers import Driver
from bench_stats import Lifecycle, Timings, schedule

from csi.pb import csi_pb2

MIB = 1024 * 1024
Mode = csi_pb2.VolumeCapability.AccessMode.Mode
# Our StorageClass parameters and the access type, per volume type.
KINDS: dict[str, tuple[dict[str, str], str]] = {
    "directory": ({"volumeType": "directory"}, "mount"),
    "loop-ext4": ({"volumeType": "loop", "fsType": "ext4"}, "mount"),
    "block": ({"volumeType": "loop"}, "block"),
}
# host-path chooses by access type alone: a "mount" volume is a directory, a "block" one a
# file on a loop device; it has no formatted-filesystem volume to set beside loop-ext4.
PEER_PARAMS: dict[str, dict[str, str]] = {"directory": {}, "block": {}}
PAYLOAD = os.urandom(MIB)


def capability(access: str) -> csi_pb2.VolumeCapability:
    mode = csi_pb2.VolumeCapability.AccessMode(mode=Mode.SINGLE_NODE_WRITER)
    if access == "block":
        return csi_pb2.VolumeCapability(
            block=csi_pb2.VolumeCapability.BlockVolume(), access_mode=mode
        )
    return csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume(), access_mode=mode)


# -- one lifecycle through a driver -------------------------------------------------------
def driver_lifecycle(driver: Driver, kind: str, index: int, base: Path, t: Lifecycle) -> None:
    access = KINDS[kind][1]
    cap = capability(access)
    staging = base / f"stage-{kind}-{index}"
    staging.mkdir(parents=True)
    target = base / f"pod-{kind}-{index}" / "vol"
    target.parent.mkdir(parents=True)
    with t.step("create"):
        volume = driver.controller.CreateVolume(
            csi_pb2.CreateVolumeRequest(
                name=f"bench-{kind}-{index}-{os.getpid()}",
                volume_capabilities=[cap],
                parameters=driver.params[kind],
                capacity_range=csi_pb2.CapacityRange(required_bytes=64 * MIB),
            )
        ).volume.volume_id
    with t.step("stage"):
        driver.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume, staging_target_path=str(staging), volume_capability=cap
            )
        )
    with t.step("publish"):
        driver.node.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume,
                staging_target_path=str(staging),
                target_path=str(target),
                volume_capability=cap,
            )
        )
    with t.step("write"):
        write_mib(target / "data" if access == "mount" else target)
    with t.step("unpublish"):
        driver.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume, target_path=str(target))
        )
    with t.step("unstage"):
        driver.node.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(volume_id=volume, staging_target_path=str(staging))
        )
    with t.step("delete"):
        driver.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume))
    staging.rmdir()
    target.parent.rmdir()


def write_mib(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, PAYLOAD)
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the same host work with plain commands -----------------------------------------------
def sh(*argv: str) -> str:
    proc = subprocess.run(argv, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def umount(path: Path) -> None:
    """umount, retried briefly: a mount can be busy for an instant under concurrency."""
    for attempt in range(5):
        try:
            sh("umount", str(path))
            return
        except RuntimeError:
            if attempt == 4:
                raise
            time.sleep(0.05)


def floor_lifecycle(kind: str, index: int, base: Path, t: Lifecycle) -> None:
    store = base / "floor-store"
    store.mkdir(parents=True, exist_ok=True)
    staging = base / f"fstage-{kind}-{index}"
    staging.mkdir(parents=True)
    target = base / f"fpod-{kind}-{index}" / "vol"
    target.parent.mkdir(parents=True)
    data = store / f"{kind}-{index}"
    device = ""
    with t.step("create"):
        if kind == "directory":
            sh("mkdir", "-p", str(data))
        else:
            sh("truncate", "-s", str(64 * MIB), str(data))
            if kind == "loop-ext4":
                sh("mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard", str(data))
    with t.step("stage"):
        if kind == "directory":
            sh("mount", "--bind", str(data), str(staging))
        else:
            device = sh("losetup", "--find", "--show", str(data))
            if kind == "loop-ext4":
                sh("mount", "-t", "ext4", device, str(staging))
    with t.step("publish"):
        if kind == "block":
            sh("touch", str(target))
            sh("mount", "--bind", device, str(target))
        else:
            sh("mkdir", str(target))
            sh("mount", "--bind", str(staging), str(target))
    with t.step("write"):
        write_mib(target / "data" if kind != "block" else target)
    with t.step("unpublish"):
        umount(target)
        sh("rm", "-rf", str(target))
    with t.step("unstage"):
        if kind != "block":
            umount(staging)
        if device:
            sh("losetup", "--detach", device)
    with t.step("delete"):
        sh("rm", "-rf", str(data))
    staging.rmdir()
    target.parent.rmdir()


# -- batches -------------------------------------------------------------------------------
Work = Callable[[int, Lifecycle], None]


def run_batch(work: Work, volumes: int, concurrency: int, first: int = 0) -> Timings:
    """``volumes`` lifecycles (numbered from ``first``) on ``concurrency`` threads."""
    lifecycles = [Lifecycle() for _ in range(volumes)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(work, first + i, lifecycles[i]) for i in range(volumes)]
        for f in futures:
            f.result()
    return Timings(lifecycles=lifecycles, wall=time.perf_counter() - started)


def interleaved(
    sides: dict[str, Work], rounds: int, volumes: int, concurrency: int, numbering: Iterator[int]
) -> dict[str, Timings]:
    """Run every side ``rounds`` times in the order of ``schedule`` (same sequence of RPCs,
    same client, sides alternating), after one untimed lifecycle each to warm up."""
    for work in sides.values():
        work(next(numbering), Lifecycle())
    result = {name: Timings() for name in sides}
    for _, name in schedule(rounds, list(sides)):
        first = next(numbering)
        for _ in range(volumes - 1):
            next(numbering)
        result[name].add(run_batch(sides[name], volumes, concurrency, first))
    return result
