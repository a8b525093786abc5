"""csi.state.store: what waits for the disk, and what a power loss can leave of the rest.

A record's durable facts (it exists, phase, size, spec) are fsynced; its node use (staging
path, targets) lives in a node-use file that is only crash-atomic. Power losses are played
by putting back what the disk may hold afterwards: an older node-use file, an empty one,
none at all, or one whose record is gone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from csi.layout import Layout, volume_id_for_name
from csi.state.records import (
    SCHEMA_VERSION,
    AccessType,
    Phase,
    PublishedTarget,
    VolumeKind,
    VolumeRecord,
    VolumeSpec,
)
from csi.state.store import StateStore, volume_json


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    result = Layout(tmp_path / "data")
    result.ensure()
    return result


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def ready(name: str = "pvc-1") -> VolumeRecord:
    return VolumeRecord(
        volume_id=volume_id_for_name(name),
        name=name,
        spec=VolumeSpec(VolumeKind.LOOP, AccessType.MOUNT, "ext4"),
        capacity_bytes=64 * 1024 * 1024,
        created_at=1700000000.0,
        phase=Phase.READY,
    )


def staged(record: VolumeRecord, staging: str = "/kubelet/staging") -> VolumeRecord:
    return record.with_changes(staging_path=staging, staged_read_only=False)


def published(record: VolumeRecord, target: str = "/pods/a") -> VolumeRecord:
    wanted = PublishedTarget(read_only=False, exclusive=False)
    return record.with_changes(targets={**record.targets, target: wanted})


def reloaded(layout: Layout) -> StateStore:
    store = StateStore(layout)
    assert store.load() == []
    return store


def use_file(layout: Layout, record: VolumeRecord) -> Path:
    return layout.node_use_dir / f"{record.volume_id}.json"


def test_new_records_and_durable_changes_are_fsynced(layout: Layout, fsyncs: list[int]) -> None:
    store = reloaded(layout)
    record = ready()
    store.put(record.with_changes(phase=Phase.CREATING))
    assert len(fsyncs) == 2, "a new record: its file and its directory"
    store.put(record)
    assert len(fsyncs) == 4, "a phase change outlives a reboot"
    store.put(record.with_changes(capacity_bytes=2 * record.capacity_bytes))
    assert len(fsyncs) == 6, "so does a new size"
    store.remove(record.volume_id)
    assert len(fsyncs) == 7, "and a removal (its directory)"


def test_node_use_is_written_without_waiting_for_the_disk(
    layout: Layout, fsyncs: list[int]
) -> None:
    store = reloaded(layout)
    record = ready()
    store.put(record)
    before = len(fsyncs)
    record_file = layout.record_path(record.volume_id).read_bytes()
    steps: list[Callable[[VolumeRecord], VolumeRecord]] = [
        staged,
        published,
        lambda r: r.with_changes(targets={}),
        lambda r: r.with_changes(staging_path="", staged_read_only=False),
    ]
    for step in steps:
        record = step(record)
        store.put(record)
        assert reloaded(layout).get(record.volume_id) == record, "a crash keeps the new use"
    assert len(fsyncs) == before, "stage, publish, unpublish and unstage fsynced"
    assert layout.record_path(record.volume_id).read_bytes() == record_file
    assert list(layout.node_use_dir.iterdir()) == [use_file(layout, record)]
    store.put(record)
    assert len(fsyncs) == before, "an unchanged record is not written at all"


def test_a_durable_change_keeps_the_node_use(layout: Layout) -> None:
    store = reloaded(layout)
    record = published(staged(ready()))
    store.put(ready())
    store.put(record)
    grown = record.with_changes(capacity_bytes=2 * record.capacity_bytes)
    store.put(grown)
    assert reloaded(layout).get(grown.volume_id) == grown
    assert volume_json(layout, grown.volume_id) == grown.to_json()


@pytest.mark.parametrize(
    "left",
    [b"", b'{"schema":', b"\x00" * 40, b'{"schema": 99, "staging_path": "/x"}'],
    ids=["empty", "torn", "zeros", "foreign-schema"],
)
def test_an_unreadable_node_use_file_costs_no_durable_fact(layout: Layout, left: bytes) -> None:
    """What some filesystems leave of a file renamed over without fsync: the record's own
    facts stand, with the node use its record file holds, and the file goes."""
    store = reloaded(layout)
    record = ready()
    store.put(record)
    store.put(published(staged(record)))
    use_file(layout, record).write_bytes(left)
    again = reloaded(layout)
    assert again.get(record.volume_id) == record
    assert not again.is_quarantined(record.volume_id)
    assert not use_file(layout, record).exists()
    assert volume_json(layout, record.volume_id) == record.to_json()


def test_an_older_node_use_file_after_a_power_loss(layout: Layout) -> None:
    """The unpublish and unstage were answered, then the power failed before their node
    use reached the disk: the record says staged and published again. Nothing is mounted
    after a power loss, and a delete is still possible (host_checks and the reboot tests
    cover the node side)."""
    store = reloaded(layout)
    record = ready()
    store.put(record)
    in_use = published(staged(record))
    store.put(in_use)
    lost = use_file(layout, record).read_bytes()
    store.put(in_use.with_changes(targets={}))
    store.put(record)
    use_file(layout, record).write_bytes(lost)  # what the disk still held
    again = reloaded(layout)
    assert again.get(record.volume_id) == in_use


def test_node_use_file_lost_entirely(layout: Layout) -> None:
    store = reloaded(layout)
    record = ready()
    store.put(record)
    store.put(published(staged(record)))
    use_file(layout, record).unlink()
    assert reloaded(layout).get(record.volume_id) == record


def test_node_use_changes_before_the_durable_facts(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One put that changes both (a delete of a volume with stale node use): the node use
    goes first, so a crash between the two leaves the new use beside the old facts, never
    an old use (which might name mounts no longer there) beside new facts."""
    store = reloaded(layout)
    record = published(staged(ready()))
    store.put(ready())
    store.put(record)
    deleting = record.with_changes(phase=Phase.DELETING, staging_path="", targets={})

    def crash(_: object) -> None:
        raise KeyboardInterrupt("killed between the two writes")

    monkeypatch.setattr(store, "_write", crash)
    with pytest.raises(KeyboardInterrupt):
        store.put(deleting)
    after = reloaded(layout).get(record.volume_id)
    assert after == record.with_changes(staging_path="", targets={})


def test_orphaned_and_temporary_node_use_files_go(layout: Layout) -> None:
    store = reloaded(layout)
    record = ready()
    store.put(record)
    store.put(staged(record))
    store.remove(record.volume_id)
    assert list(layout.node_use_dir.iterdir()) == []
    orphan = use_file(layout, ready("pvc-gone"))
    orphan.write_text(json.dumps({"schema": SCHEMA_VERSION, "staging_path": "", "targets": {}}))
    (layout.node_use_dir / f"{record.volume_id}.json.tmp").write_text("{")
    reloaded(layout)
    assert list(layout.node_use_dir.iterdir()) == []


def test_node_use_of_a_damaged_record_is_left_alone(layout: Layout) -> None:
    store = reloaded(layout)
    record = ready()
    store.put(record)
    store.put(staged(record))
    layout.record_path(record.volume_id).write_text("{not json")
    again = StateStore(layout)
    assert len(again.load()) == 1
    assert again.is_quarantined(record.volume_id)
    assert use_file(layout, record).exists(), "evidence of its mounts kept for the repair"
