"""csi.state: typed records, atomic writes, and what load() does with damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from csi.errors import FailedPrecondition
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
from csi.state.store import StateStore, gives_up


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    result = Layout(tmp_path / "data")
    result.ensure()
    return result


def make_record(name: str = "pvc-1", **changes: object) -> VolumeRecord:
    record = VolumeRecord(
        volume_id=volume_id_for_name(name),
        name=name,
        spec=VolumeSpec(
            VolumeKind.LOOP, AccessType.MOUNT, "xfs", mode=0o750, allowed_mount_options=("noatime",)
        ),
        capacity_bytes=300 * 1024 * 1024,
        created_at=1700000000.5,
        phase=Phase.READY,
        staging_path="/var/lib/kubelet/staging",
        staged_read_only=True,
        targets={"/pods/a": PublishedTarget(read_only=True, exclusive=False)},
    )
    return record.with_changes(**changes)


def fresh(layout: Layout) -> StateStore:
    store = StateStore(layout)
    assert store.load() == []
    return store


def test_record_json_round_trip() -> None:
    record = make_record()
    data = json.loads(json.dumps(record.to_json()))
    assert data["schema"] == SCHEMA_VERSION
    assert VolumeRecord.from_json(data) == record


def test_put_get_remove_survive_reload(layout: Layout) -> None:
    store = fresh(layout)
    first, second = (
        make_record("pvc-1"),
        make_record("pvc-2", spec=VolumeSpec(VolumeKind.DIRECTORY, AccessType.MOUNT, "")),
    )
    store.put(first)
    store.put(second)
    assert store.get(first.volume_id) == first

    reloaded = fresh(layout)
    assert reloaded.get(first.volume_id) == first
    assert reloaded.get(second.volume_id) == second
    assert reloaded.get(volume_id_for_name("pvc-2")) == second
    assert reloaded.sorted_ids() == sorted([first.volume_id, second.volume_id])
    assert reloaded.count() == 2

    updated = first.with_changes(phase=Phase.DELETING, targets={})
    reloaded.put(updated)
    reloaded.remove(second.volume_id)
    reloaded.remove(second.volume_id)  # idempotent

    again = fresh(layout)
    assert again.get(first.volume_id) == updated
    assert again.get(second.volume_id) is None
    assert again.get(volume_id_for_name("pvc-2")) is None
    assert not layout.record_path(second.volume_id).exists()


def test_put_writes_one_file_and_no_temp(layout: Layout) -> None:
    store = fresh(layout)
    record = make_record()
    store.put(record)
    store.put(record.with_changes(capacity_bytes=1))
    assert [p.name for p in layout.state_dir.iterdir()] == [f"{record.volume_id}.json"]
    on_disk = json.loads(layout.record_path(record.volume_id).read_text())
    assert on_disk["capacity_bytes"] == 1
    assert layout.record_path(record.volume_id).stat().st_mode & 0o077 == 0


def test_load_removes_leftover_temp_files(layout: Layout) -> None:
    store = fresh(layout)
    record = make_record()
    store.put(record)
    leftover = layout.state_dir / f"{record.volume_id}.json.tmp"
    leftover.write_text('{"half": ')
    reloaded = StateStore(layout)
    assert reloaded.load() == []
    assert not leftover.exists()
    assert reloaded.get(record.volume_id) == record
    assert not reloaded.is_quarantined(record.volume_id)


def _schema(value: object) -> str:
    data = make_record("damaged").to_json()
    data["schema"] = value
    return json.dumps(data)


def _missing_key() -> str:
    data = make_record("damaged").to_json()
    del data["spec"]["kind"]
    return json.dumps(data)


def _bad_enum() -> str:
    data = make_record("damaged").to_json()
    data["phase"] = "exploded"
    return json.dumps(data)


def _bad_target() -> str:
    data = make_record("damaged").to_json()
    data["targets"] = {"/x": "yes"}
    return json.dumps(data)


def _bad_spec() -> str:
    data = make_record("damaged").to_json()
    data["spec"] = None
    return json.dumps(data)


DAMAGE = {
    "empty": "",
    "truncated": json.dumps(make_record("damaged").to_json())[:-20],
    "garbage": "\x00\xff not json at all",
    "schema-zero": _schema(0),
    "schema-text": _schema("2"),
    "no-schema": "{}",
    "missing-key": _missing_key(),
    "bad-enum": _bad_enum(),
    "bad-target": _bad_target(),
    "bad-spec": _bad_spec(),
}


@pytest.mark.parametrize("content", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_record_left_in_place_and_quarantined(layout: Layout, content: str) -> None:
    store = fresh(layout)
    good = make_record("good")
    store.put(good)
    damaged_id = volume_id_for_name("damaged")
    path = layout.record_path(damaged_id)
    path.write_text(content)

    reloaded = StateStore(layout)
    damaged = reloaded.load()
    assert [d.path for d in damaged] == [path]
    assert damaged[0].reason
    assert path.read_text() == content  # never deleted or rewritten
    assert reloaded.is_quarantined(damaged_id)
    assert reloaded.get(damaged_id) is None
    assert reloaded.get(good.volume_id) == good
    assert not reloaded.is_quarantined(good.volume_id)


def test_binary_garbage_record(layout: Layout) -> None:
    path = layout.record_path(volume_id_for_name("damaged"))
    path.write_bytes(b"\xff\xfe\x00garbage")
    store = StateStore(layout)
    assert [d.path for d in store.load()] == [path]
    assert store.is_quarantined(path.stem)
    assert path.read_bytes() == b"\xff\xfe\x00garbage"


@pytest.mark.parametrize("content", ["[]", "null", "42", '"text"'])
def test_non_object_json_record_is_quarantined(layout: Layout, content: str) -> None:
    # Regression: JSON that is not an object used to crash load() with AttributeError,
    # which failed start-up reconciliation for the whole driver.
    path = layout.record_path(volume_id_for_name("damaged"))
    path.write_text(content)
    store = StateStore(layout)
    assert [d.path for d in store.load()] == [path]
    assert store.is_quarantined(path.stem)


def test_record_under_wrong_file_name_is_quarantined(layout: Layout) -> None:
    record = make_record("pvc-1")
    other_id = volume_id_for_name("pvc-2")
    path = layout.record_path(other_id)
    path.write_text(json.dumps(record.to_json()))
    store = StateStore(layout)
    damaged = store.load()
    assert [(d.path, d.reason) for d in damaged] == [(path, "ID does not match file name")]
    assert store.is_quarantined(other_id)
    assert store.get(record.volume_id) is None
    assert path.exists()


@pytest.mark.parametrize("file_name", ["notes.txt", "UPPER.json", "vol-x.json.bak"])
def test_unexpected_file_names_reported_not_deleted(layout: Layout, file_name: str) -> None:
    path = layout.state_dir / file_name
    path.write_text("{}")
    store = StateStore(layout)
    assert [(d.path, d.reason) for d in store.load()] == [(path, "unexpected file name")]
    assert path.exists()
    assert store.count() == 0


def test_reload_forgets_quarantine_once_repaired(layout: Layout) -> None:
    record = make_record("damaged")
    path = layout.record_path(record.volume_id)
    path.write_text("{")
    store = StateStore(layout)
    store.load()
    assert store.is_quarantined(record.volume_id)
    path.write_text(json.dumps(record.to_json()))
    assert store.load() == []
    assert not store.is_quarantined(record.volume_id)
    assert store.get(record.volume_id) == record


def test_record_from_a_newer_driver_is_refused_not_quarantined(layout: Layout) -> None:
    store = fresh(layout)
    good = make_record("good")
    store.put(good)
    newer_id = volume_id_for_name("damaged")
    path = layout.record_path(newer_id)
    content = _schema(SCHEMA_VERSION + 1)
    path.write_text(content)

    reloaded = StateStore(layout)
    assert reloaded.load() == []  # not damage
    assert reloaded.too_new() == [newer_id]
    assert not reloaded.is_quarantined(newer_id)
    assert reloaded.get(newer_id) is None
    for call in (
        lambda: reloaded.check_usable(newer_id),
        lambda: reloaded.require_ready(newer_id),
        lambda: reloaded.put(make_record("damaged")),
    ):
        newer = rf"newer driver .*schema {SCHEMA_VERSION + 1}"
        with pytest.raises(FailedPrecondition, match=newer):
            call()
    assert path.read_text() == content  # never rewritten
    assert reloaded.get(good.volume_id) == good


@pytest.mark.parametrize(
    ("before", "after", "teardown"),
    [
        ({"phase": "ready"}, {"phase": "deleting"}, True),
        ({"phase": "creating"}, {"phase": "ready"}, False),
        (
            {"staging_path": "/s", "targets": {"/a": 1, "/b": 2}},
            {"staging_path": "/s", "targets": {"/a": 1}},
            True,
        ),
        (
            {"staging_path": "/s", "staged_read_only": True},
            {"staging_path": "", "staged_read_only": False},
            True,
        ),
        ({"staging_path": ""}, {"staging_path": "/s"}, False),
        ({"targets": {"/a": 1}}, {"targets": {"/a": 2}}, False),
        ({"mount_ids": ["m1", "m2"]}, {"mount_ids": ["m2"]}, True),
        ({"mount_ids": ["m1"]}, {"mount_ids": ["m1", "m2"]}, False),
        ({"capacity_bytes": 1}, {"capacity_bytes": 2}, False),
        ({}, {"name": "new"}, False),
    ],
)
def test_a_change_that_only_gives_up_is_a_teardown_step(
    before: dict[str, object], after: dict[str, object], teardown: bool
) -> None:
    assert gives_up(before, after) is teardown
