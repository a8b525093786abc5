"""Helpers for the encryption and access-control tests: keyed volumes, raw image searches,
a read-only look at an image from outside the driver, and the driver as a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from csi.pb import csi_pb2
from tests.integration.snapshot_support import Session
from tests.support import driver
from tests.support.driver import Client
from tests.support.host import loops_for, mounts_at, sh
from tests.support.kubelet import MIB, MULTI_WRITER, Flavour

REPO = Path(__file__).resolve().parents[2]
SECRET_KEY = "encryptionKey"
KEY = f"right-key-{uuid.uuid4().hex}"  # 42 bytes: above the driver's 16-byte minimum
OTHER_KEY = f"wrong-key-{uuid.uuid4().hex}"
SHORT_KEY = "too-short"  # 9 bytes
ENCRYPTED = Flavour(
    "encrypted",
    {"volumeType": "loop", "fsType": "ext4", "encryption": "fscrypt"},
    64 * MIB,
    fs_type="ext4",
)
ENOKEY = 126  # "Required key not available"; errno has no name for it on every platform


def secrets(key: str | None) -> dict[str, str]:
    return {} if key is None else {SECRET_KEY: key}


def with_params(flavour: Flavour, **params: str) -> Flavour:
    """``flavour`` with extra StorageClass parameters (and an id that says so)."""
    extra = "-".join(f"{k}{v}" for k, v in params.items())
    return Flavour(
        f"{flavour.id}-{extra}",
        {**flavour.params, **params},
        flavour.size,
        fs_type=flavour.fs_type,
        block=flavour.block,
    )


class KeyedSession(Session):
    """A Session whose create and stage carry CSI secrets (the encryption key)."""

    def create_keyed(
        self,
        name: str,
        flavour: Flavour,
        key: str | None,
        *,
        size: int | None = None,
        snapshot_id: str = "",
        source_volume_id: str = "",
    ) -> str:
        request = csi_pb2.CreateVolumeRequest(
            name=name,
            parameters=dict(flavour.params),
            capacity_range=csi_pb2.CapacityRange(required_bytes=size or flavour.size),
            volume_capabilities=[flavour.cap()],
            secrets=secrets(key),
        )
        if snapshot_id:
            request.volume_content_source.snapshot.snapshot_id = snapshot_id
        if source_volume_id:
            request.volume_content_source.volume.volume_id = source_volume_id
        volume_id = str(self.controller.CreateVolume(request).volume.volume_id)
        self.later(lambda: self.kubelet.delete(volume_id))
        return volume_id

    def stage_keyed(
        self,
        volume_id: str,
        key: str | None,
        cap: csi_pb2.VolumeCapability | None = None,
    ) -> Path:
        staging = self.kubelet.staging(volume_id)
        self.later(lambda: self.kubelet.unstage(volume_id, staging))
        self.node.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=volume_id,
                staging_target_path=str(staging),
                volume_capability=cap or ENCRYPTED.cap(),
                secrets=secrets(key),
            )
        )
        return staging

    def publish_to(
        self,
        volume_id: str,
        pod: str,
        cap: csi_pb2.VolumeCapability | None = None,
        *,
        readonly: bool = False,
    ) -> Path:
        target = self.kubelet.target(pod)
        self.later(lambda: self.kubelet.unpublish(volume_id, target))
        staging = self.kubelet.staging(volume_id)
        self.kubelet.publish(volume_id, staging, target, cap or ENCRYPTED.cap(), readonly=readonly)
        return target

    def open(self, volume_id: str, key: str | None, pod: str) -> Path:
        """Stage with ``key`` and publish for ``pod``; returns what the pod sees."""
        self.stage_keyed(volume_id, key)
        return self.publish_to(volume_id, pod)

    def close(self, volume_id: str, target: Path) -> None:
        self.unmount(volume_id, target)

    def write_and_unpublish(self, volume_id: str, data: bytes) -> None:
        """A file and a directory with plain names, written by a pod; left staged."""
        target = self.open(volume_id, KEY, "writer")
        (target / "plain-name.txt").write_bytes(data)
        (target / "plain-dir").mkdir()
        (target / "plain-dir" / "inner.txt").write_bytes(data)
        self.kubelet.unpublish(volume_id, target)

    def nothing_on_host(self, volume_id: str) -> None:
        """After a refused stage: no mount, no loop device, nothing in the staging path."""
        staging = self.kubelet.staging(volume_id)
        assert mounts_at(staging) == [], "a refused stage left its mount"
        assert loops_for(self.kubelet.image(volume_id)) == [], "a refused stage left its loop"
        assert list(staging.iterdir()) == [], "a refused stage left files in the staging path"

    def nothing_created(self) -> None:
        """After a refused CreateVolume: no image, directory or record."""
        data = self.kubelet.data_dir
        found = [p for d in ("images", "volumes", "state/volumes") for p in (data / d).glob("*")]
        assert found == [], f"a refused CreateVolume left {found}"


def assert_locked(data_dir: Path) -> None:
    """Names under ``data_dir`` are not the plaintext ones and no file opens (ENOKEY)."""
    names = os.listdir(data_dir)
    assert len(names) == 2
    assert not {"plain-name.txt", "plain-dir"} & set(names), f"plaintext names: {names}"
    files = [data_dir / n for n in names if (data_dir / n).is_file()]
    assert len(files) == 1
    with pytest.raises(OSError, match="key") as caught:
        files[0].read_bytes()
    assert caught.value.errno == ENOKEY


def image_holds(image: Path, needle: bytes, chunk: int = 4 * MIB) -> bool:
    """Do the raw bytes of ``image`` contain ``needle`` anywhere (chunk borders included)?"""
    tail = b""
    with image.open("rb") as fh:
        while block := fh.read(chunk):
            if needle in tail + block:
                return True
            tail = block[-(len(needle) - 1) :]
    return False


def cap_with(
    *,
    group: str = "",
    flags: tuple[str, ...] = (),
    mode: csi_pb2.VolumeCapability.AccessMode.Mode = MULTI_WRITER,
) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(
            mount_flags=list(flags), volume_mount_group=group
        ),
        access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode),
    )


@contextmanager
def mounted_read_only(image: Path, where: Path) -> Iterator[Path]:
    """The image as the host sees it without the driver: a read-only loop device, mounted ro."""
    attach = sh("losetup", "--read-only", "--find", "--show", "--", str(image))
    assert attach.returncode == 0, attach.stderr
    device = attach.stdout.strip()
    where.mkdir(parents=True, exist_ok=True)
    try:
        done = sh("mount", "-t", "ext4", "-o", "ro", "--", device, str(where))
        assert done.returncode == 0, done.stderr
        try:
            yield where
        finally:
            sh("umount", "--", str(where))
            assert not mounts_at(where)
    finally:
        sh("losetup", "-d", device)


class PsSampler:
    """Samples the command lines of this test's own processes (its children and theirs:
    the driver and every tool it runs) every 10 ms until stopped; keeps every line seen.

    ``ps -ww -eo pid,ppid,args`` is read whole, but only lines of processes descended from
    this one are kept: no other process on the machine can appear in (or fail) a check.
    ``-ww``: without a terminal, plain ``ps -eo args`` cuts each line at 80 columns.
    """

    def __init__(self) -> None:
        self.lines: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        argv = ["ps", "-ww", "-eo", "pid=,ppid=,args="]
        while not self._stop.is_set():
            proc = subprocess.run(argv, capture_output=True, text=True)
            self.lines.update(_descendants(proc.stdout, me))
            self.samples += 1
            self._stop.wait(0.01)

    def __enter__(self) -> PsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _descendants(table: str, ancestor: int) -> list[str]:
    """The command lines in ``ps -eo pid=,ppid=,args=`` output of ``ancestor``'s
    descendants."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for line in table.splitlines():
        fields = line.split(None, 2)
        if len(fields) < 2 or not (fields[0].isdigit() and fields[1].isdigit()):
            continue
        pid, ppid = int(fields[0]), int(fields[1])
        parents[pid], commands[pid] = ppid, fields[2] if len(fields) > 2 else ""
    found: list[str] = []
    for pid, command in commands.items():
        seen, up = set(), parents.get(pid)
        while up is not None and up not in seen and up != ancestor:
            seen.add(up)
            up = parents.get(up)
        if up == ancestor:
            found.append(command)
    return found


def driver_subprocess(data: Path, log: Path) -> AbstractContextManager[Client]:
    """``python -m csi`` at debug level on ``data``, serving until the block ends."""
    return driver.driver_subprocess(data, log, node_id="enc-node")
