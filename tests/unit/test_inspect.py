"""``localvol-csi inspect`` without root: records read (and upgraded) in memory only, the
refused ones with their reasons, unaccounted data and scratch names; text and JSON; the
data dir never changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from csi.config import MIB
from csi.state.migrations import CURRENT
from tests.inspection import fingerprint, inspect_command, inspect_json
from tests.support.driver import running_driver
from tests.unit.support import create

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "records-v1"


def made_data_dir(tmp_path: Path) -> Path:
    """Two directory volumes made by the driver, plus what a troubled node has: a damaged
    record, one from a newer driver, data no record names and a half-made create."""
    data = tmp_path / "data"
    with running_driver(data) as driver:
        create(driver.client, "pvc-one", required=2 * MIB)
        create(driver.client, "pvc-two", required=3 * MIB)
    state = data / "state" / "volumes"
    (state / "vol-damaged.json").write_text("{half a record")
    (state / "vol-future.json").write_text(json.dumps({"schema": CURRENT + 1, "volume_id": "x"}))
    (state / "vol-interrupted.json.tmp").write_text("{")
    (data / "images" / "vol-orphan.img").write_bytes(b"\0" * 4096)
    (data / "volumes" / "vol-stray").mkdir()
    (data / "images" / "vol-new.img.partial").write_bytes(b"")
    return data


def test_json_report_and_nothing_changes(tmp_path: Path) -> None:
    data = made_data_dir(tmp_path)
    before = fingerprint(data)
    report = inspect_json(data)
    assert fingerprint(data) == before, "inspect changed the data dir"
    volumes = {v["name"]: v for v in report["volumes"]}
    assert set(volumes) == {"pvc-one", "pvc-two"}
    one = volumes["pvc-one"]
    assert (one["kind"], one["size_bytes"], one["phase"]) == ("directory", 2 * MIB, "ready")
    assert one["staging_path"] == ""
    assert one["targets"] == []
    assert one["loop_devices"] == []
    assert one["healthy"] is True
    refused = {Path(r["path"]).name: r["reason"] for r in report["refused"]}
    assert refused["vol-damaged.json"].startswith("unreadable")
    assert "newer driver" in refused["vol-future.json"]
    assert "vol-interrupted.json.tmp" not in refused  # an interrupted write, not a record
    assert sorted(Path(p).name for p in report["unaccounted"]) == ["vol-orphan.img", "vol-stray"]
    assert [Path(p).name for p in report["scratch"]] == ["vol-new.img.partial"]
    assert report["free_bytes"] > 0


def test_text_report(tmp_path: Path) -> None:
    data = made_data_dir(tmp_path)
    proc = inspect_command(data)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith(f"data dir {data}: 2 volumes, 0 snapshots")
    assert "2 refused records, 2 unaccounted paths" in text
    assert "name=pvc-one" in text
    assert "directory, 2.0 MiB, ready" in text
    assert "health:    ok: volume is healthy" in text
    assert "vol-damaged.json: unreadable" in text
    assert f"{data}/images/vol-orphan.img" in text
    assert "removed by the driver when it starts" in text


def test_older_records_are_upgraded_in_memory_only(tmp_path: Path) -> None:
    """The store's load() would rewrite schema-1 records; inspect must not."""
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "volumes", data / "state" / "volumes")
    shutil.copytree(FIXTURES / "snapshots", data / "state" / "snapshots")
    before = fingerprint(data)
    report = inspect_json(data)
    assert fingerprint(data) == before
    for path in (data / "state" / "volumes").iterdir():
        assert json.loads(path.read_text())["schema"] == 1
    kinds = {v["name"]: (v["kind"], v["fs_type"]) for v in report["volumes"]}
    assert kinds["pvc-v1-directory"] == ("directory", "")
    assert len(report["volumes"]) == 6
    assert len(report["snapshots"]) == 1
    assert report["refused"] == []
    # Their data is gone (only the records were copied): the health check says so.
    assert all(not v["healthy"] and "missing" in v["health"] for v in report["volumes"])


def test_a_missing_data_dir_is_an_error(tmp_path: Path) -> None:
    proc = inspect_command(tmp_path / "nowhere")
    assert proc.returncode == 2
    assert "is not a directory" in proc.stderr
    assert not (tmp_path / "nowhere").exists()
