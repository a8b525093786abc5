"""How many times one lifecycle waits for the disk, per step and kind of volume.

The driver's own fsync and fdatasync calls are counted in-process (mkfs, run as a command,
is not counted) while one volume of each kind is created, staged, published, unpublished,
unstaged and deleted through the volume layer. Only what outlives a reboot is fsynced (a
new or settled volume record, the artefact's rename, the decision to delete and the
removal); the node steps only describe mounts and loop devices, so they wait for nothing.
A regression shows as a changed count.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from csi.config import MIB
from csi.host import mount
from csi.layout import Layout
from csi.pb import csi_pb2
from csi.state.records import AccessType, VolumeKind, VolumeSpec
from csi.state.store import StateStore
from csi.validation import Capability
from csi.volumes.manager import Volumes

WRITER = csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
STEPS = ("create", "stage", "publish", "unpublish", "unstage", "delete")
# create: the `creating` record (file + directory), the artefact's rename into place
# (directory), the `ready` record (file + directory), plus the new sparse image (file).
# delete: the `deleting` record (file + directory) and the record's removal (directory).
EXPECTED = {
    "directory": {"create": 5, "delete": 3},
    "loop-ext4": {"create": 6, "delete": 3},
    "block": {"create": 6, "delete": 3},
}
SPECS = {
    "directory": VolumeSpec(VolumeKind.DIRECTORY, AccessType.MOUNT, ""),
    "loop-ext4": VolumeSpec(VolumeKind.LOOP, AccessType.MOUNT, "ext4"),
    "block": VolumeSpec(VolumeKind.LOOP, AccessType.BLOCK, ""),
}


class Fsyncs:
    """Counts of os.fsync and os.fdatasync calls, by the step under way."""

    def __init__(self) -> None:
        self.step = ""
        self.counts: Counter[str] = Counter()

    def wrap(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def call(fd: int) -> None:
            self.counts[self.step] += 1
            real(fd)

        return call


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Fsyncs:
    counter = Fsyncs()
    monkeypatch.setattr(os, "fsync", counter.wrap(os.fsync))
    monkeypatch.setattr(os, "fdatasync", counter.wrap(os.fdatasync))
    return counter


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_fsyncs_of_one_lifecycle(tmp_path: Path, fsyncs: Fsyncs, kind: str) -> None:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    store = StateStore(layout)
    assert store.load() == []
    volumes = Volumes(layout, store)
    spec = SPECS[kind]
    cap = Capability(spec.access_type, WRITER, spec.fs_type, (), "")
    staging = tmp_path / "kubelet" / "staging"
    staging.mkdir(parents=True)
    target = tmp_path / "kubelet" / "pod" / "target"
    target.parent.mkdir()
    try:
        fsyncs.step = "create"
        record = volumes.create(f"pvc-{kind}", spec, 16 * MIB)
        fsyncs.step = "stage"
        volumes.stage(record, staging, cap)
        fsyncs.step = "publish"
        volumes.publish(store.require_ready(record.volume_id), staging, target, cap, False)
        assert mount.is_mount_point(target)
        fsyncs.step = "unpublish"
        volumes.unpublish(store.require_ready(record.volume_id), target)
        fsyncs.step = "unstage"
        volumes.unstage(store.require_ready(record.volume_id), staging)
        fsyncs.step = "delete"
        volumes.delete(store.require_ready(record.volume_id))
    finally:
        fsyncs.step = "cleanup"
        for path in (target, staging):
            mount.unmount(path)
    found = {s: fsyncs.counts[s] for s in STEPS}
    print(f"fsyncs of one {kind} lifecycle: {found} total {sum(found.values())}")
    assert found == {s: EXPECTED[kind].get(s, 0) for s in STEPS}
