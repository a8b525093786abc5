"""csi.state.migrations: records written by the driver of schema 1 (tests/fixtures/records-v1)
are read by this one with the same meaning, and written back in the current schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from csi.layout import Layout
from csi.state import migrations
from csi.state.records import SCHEMA_VERSION, AccessType, VolumeKind, VolumeSpec
from csi.state.store import SnapshotStore, StateStore
from csi.volumes.params import volume_context

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "records-v1"
V1_VOLUMES = sorted((FIXTURES / "volumes").glob("*.json"))
V1_SNAPSHOTS = sorted((FIXTURES / "snapshots").glob("*.json"))

# What each fixture volume is, as its name says (tests/fixtures/records-v1/README.md).
EXPECTED = {
    "pvc-v1-directory": VolumeSpec(VolumeKind.DIRECTORY, AccessType.MOUNT, "", mode=0o770),
    "pvc-v1-ext4": VolumeSpec(
        VolumeKind.LOOP, AccessType.MOUNT, "ext4", allowed_mount_options=("noatime", "nodev")
    ),
    "pvc-v1-restored": VolumeSpec(
        VolumeKind.LOOP, AccessType.MOUNT, "ext4", allowed_mount_options=("noatime", "nodev")
    ),
    "pvc-v1-xfs": VolumeSpec(VolumeKind.LOOP, AccessType.MOUNT, "xfs"),
    "pvc-v1-block": VolumeSpec(VolumeKind.LOOP, AccessType.BLOCK, ""),
    "pvc-v1-encrypted": VolumeSpec(VolumeKind.LOOP, AccessType.MOUNT, "ext4", encrypted=True),
}


def read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_fixtures_are_schema_1() -> None:
    assert {read(p)["name"] for p in V1_VOLUMES} == set(EXPECTED)
    assert V1_SNAPSHOTS
    assert all(read(p)["schema"] == 1 for p in V1_VOLUMES + V1_SNAPSHOTS)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    result = Layout(tmp_path / "data")
    result.ensure()
    for path in V1_VOLUMES:
        shutil.copy(path, result.state_dir / path.name)
    for path in V1_SNAPSHOTS:
        shutil.copy(path, result.snapshot_state_dir / path.name)
    return result


def test_volumes_keep_their_meaning(layout: Layout) -> None:
    store = StateStore(layout)
    assert store.load() == []
    assert store.count() == len(V1_VOLUMES)
    for path in V1_VOLUMES:
        old = read(path)
        record = store.get(old["volume_id"])
        assert record is not None
        assert record.spec == EXPECTED[old["name"]]
        # The volume context a client sees is what schema 1 recorded, unchanged.
        assert volume_context(record.spec) == old["parameters"]
        unchanged = ("name", "capacity_bytes", "created_at", "phase", "content_source")
        assert {k: getattr(record, k) for k in unchanged} == {k: old[k] for k in unchanged}
        assert (record.kind, record.access_type, record.fs_type) == (
            old["kind"],
            old["access_type"],
            old["fs_type"],
        )
        assert record.project_id is None  # never held to its size by a project quota


def test_schema_2_volumes_were_never_held() -> None:
    """Schema 3 added ``project_id``: a schema 2 volume (directory or not) names none."""
    for path in V1_VOLUMES:
        schema_2 = {**migrations.VOLUME_STEPS[1](read(path)), "schema": 2}
        upgraded, older = migrations.upgrade(schema_2, migrations.VOLUME_STEPS)
        assert older
        assert upgraded["project_id"] is None
        assert {k: v for k, v in upgraded.items() if k not in ("project_id", "schema")} == {
            k: v for k, v in schema_2.items() if k != "schema"
        }


def test_upgraded_records_are_written_back_once(layout: Layout) -> None:
    store = StateStore(layout)
    store.load()
    for path in V1_VOLUMES:
        data = read(layout.state_dir / path.name)
        assert data["schema"] == SCHEMA_VERSION
        assert "parameters" not in data
    before = {p.name: p.read_bytes() for p in layout.state_dir.iterdir()}
    again = StateStore(layout)
    assert again.load() == []
    assert {p.name: p.read_bytes() for p in layout.state_dir.iterdir()} == before
    assert sorted(r.volume_id for r in again.all()) == sorted(r.volume_id for r in store.all())


def test_snapshots_load_unchanged(layout: Layout) -> None:
    store = SnapshotStore(layout)
    assert store.load() == []
    for path in V1_SNAPSHOTS:
        old = read(path)
        snapshot = store.get(old["snapshot_id"])
        assert snapshot is not None
        assert snapshot.to_json() == {**old, "schema": SCHEMA_VERSION}


def test_every_older_schema_has_a_step() -> None:
    for steps in (migrations.VOLUME_STEPS, migrations.SNAPSHOT_STEPS, migrations.GROUP_STEPS):
        assert sorted(steps) == list(range(1, migrations.CURRENT))


@pytest.mark.parametrize("schema", [0, -1, None, "1", True, 1.0])
def test_unusable_schema_is_damage(schema: object) -> None:
    with pytest.raises(ValueError, match="unsupported record schema"):
        migrations.upgrade({"schema": schema}, migrations.VOLUME_STEPS)


def test_newer_schema_is_refused() -> None:
    with pytest.raises(migrations.RecordTooNew, match="newer driver"):
        migrations.upgrade({"schema": migrations.CURRENT + 1}, migrations.VOLUME_STEPS)
