"""csi.volumes.ledger: the space accounts kept as records change equal the accounts counted
afresh over every record, through every kind of change; and what a question costs does not
grow with the volumes a node holds."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from csi.config import MIB
from csi.layout import Layout
from csi.state.records import (
    AccessType,
    Phase,
    PublishedTarget,
    VolumeKind,
    VolumeRecord,
    VolumeSpec,
)
from csi.state.store import StateStore
from csi.volumes.ledger import SpaceLedger
from csi.volumes.sizing import counted, promised_by
from tests.support.held_volumes import write_held_volumes

EXT4 = VolumeSpec(VolumeKind.LOOP, AccessType.MOUNT, "ext4")
BLOCK = VolumeSpec(VolumeKind.LOOP, AccessType.BLOCK, "")
DIRECTORY = VolumeSpec(VolumeKind.DIRECTORY, AccessType.MOUNT, "")


class Node:
    """A store with records and sparse images, as the driver keeps them: an image is written
    only while its volume is in use, or just before its record changes."""

    def __init__(self, root: Path) -> None:
        self.layout = Layout(root)
        self.layout.ensure()
        self.store = StateStore(self.layout)
        self.store.load()
        self.ledger = SpaceLedger(self.layout)
        self.store.watch(self.ledger)
        self.made = 0

    def fresh(self) -> tuple[int, int]:
        """(provisioned, promised) counted over every record, as before the ledger."""
        records = [r for r in self.store.all() if counted(r)]
        return (
            sum(r.capacity_bytes for r in records),
            sum(promised_by(r, self.layout) for r in records),
        )

    def kept(self) -> tuple[int, int]:
        return self.ledger.provisioned(), self.ledger.promised()

    def new(self, spec: VolumeSpec, size: int) -> VolumeRecord:
        self.made += 1
        record = VolumeRecord(f"vol-{self.made}", f"n{self.made}", spec, size, 0.0)
        self.store.put(record)  # CREATING: the image does not exist yet
        if spec.kind is VolumeKind.LOOP:
            with self.layout.image_path(record.volume_id).open("wb") as image:
                image.truncate(size)
                image.write(b"\1" * (MIB // 2))  # what mkfs writes
        ready = record.with_changes(phase=Phase.READY)
        self.store.put(ready)
        return ready

    def write(self, record: VolumeRecord, size: int, rng: random.Random) -> None:
        if record.kind is not VolumeKind.LOOP:
            return
        with self.layout.image_path(record.volume_id).open("r+b") as image:
            image.seek(rng.randrange(0, record.capacity_bytes - size))
            image.write(b"\2" * size)


def test_the_kept_accounts_are_the_counted_ones_through_every_change(tmp_path: Path) -> None:
    node = Node(tmp_path)
    rng = random.Random(28)
    for step in range(400):
        records = [r for r in node.store.all() if r.phase is Phase.READY]
        action = rng.choice(["new", "new", "stage", "write", "unstage", "grow", "delete"])
        record = rng.choice(records) if records else None
        if action == "new" or record is None:
            spec = rng.choice([EXT4, BLOCK, DIRECTORY])
            node.new(spec, rng.choice([4, 8, 16]) * MIB)
        elif action == "stage" and not record.in_use:
            staged = record.with_changes(staging_path=f"/staging/{record.volume_id}")
            node.store.put(staged.with_changes(targets={"/t": PublishedTarget(False, False)}))
        elif action == "write" and record.in_use:
            # A pod writes: nothing tells the store, and the next question must see it.
            node.write(record, rng.choice([1, 2]) * MIB // 4, rng)
        elif action == "unstage" and record.in_use:
            node.write(record, MIB // 8, rng)  # the unmount's last writes, then the record
            node.store.put(record.with_changes(staging_path="", targets={}))
        elif action == "grow" and not record.in_use:
            bigger = record.capacity_bytes + 4 * MIB
            if record.kind is VolumeKind.LOOP:
                os.truncate(node.layout.image_path(record.volume_id), bigger)
            node.store.put(record.with_changes(capacity_bytes=bigger))
        elif action == "delete" and not record.in_use:
            node.store.put(record.with_changes(phase=Phase.DELETING))
            node.layout.image_path(record.volume_id).unlink(missing_ok=True)
            node.store.remove(record.volume_id)
        if step % 7 == 0 or action == "write":
            assert node.kept() == node.fresh(), f"step {step}: {action}"
    assert node.kept() == node.fresh()


def test_a_load_starts_the_accounts_again(tmp_path: Path) -> None:
    node = Node(tmp_path)
    for size in (4, 8, 16):
        node.new(EXT4, size * MIB)
    before = node.kept()
    assert before == node.fresh()
    assert before[0] == 28 * MIB
    node.store.load()  # as at a start: the same records, the accounts read again
    assert node.kept() == before


@pytest.mark.parametrize("held", [10, 2000])
def test_a_question_reads_the_volumes_in_use_and_the_changed_ones_only(
    tmp_path: Path, held: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node(tmp_path)
    write_held_volumes(node.layout, held, in_use=3)
    node.store.load()
    node.ledger.promised()  # what the start reads, once
    in_use = [r for r in node.store.all() if r.in_use]
    assert len(in_use) == 3
    reads: list[VolumeRecord] = []

    def counting(record: VolumeRecord, layout: Layout) -> int:
        reads.append(record)
        return promised_by(record, layout)

    monkeypatch.setattr("csi.volumes.ledger.promised_by", counting)
    node.new(BLOCK, 4 * MIB)
    node.ledger.promised()
    assert len(reads) == len(in_use) + 1  # the volumes in use, and the new one once
    reads.clear()
    node.ledger.promised()
    assert len(reads) == len(in_use)
