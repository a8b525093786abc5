"""An upgrade from the records of schema 1 (tests/fixtures/records-v1, written by the driver
before records held a parsed spec): the new driver starts on them, serves their volumes as
they were made, and deletes them."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi.host import modes
from csi.layout import Layout
from csi.pb import csi_pb2
from csi.state.records import SCHEMA_VERSION
from tests.legacy_condition import legacy_condition
from tests.support.driver import running_driver
from tests.support.host import loops_under, mounts_under
from tests.support.host_user import allowed, attempts, everything_under, traversable
from tests.support.kubelet import Kubelet, block_capability, mount_capability

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "records-v1"


def fixture_records(kind: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((FIXTURES / kind).glob("*.json"))]


def make_image(path: Path, size: int, fs_type: str, *, encrypt: bool = False) -> None:
    """What a loop volume of schema 1 left on disk: a sparse image, formatted unless raw."""
    with open(path, "wb") as fh:
        fh.truncate(size)
    if fs_type == "ext4":
        extra = ["-O", "encrypt"] if encrypt else []
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", *extra, str(path)], check=True)
    elif fs_type == "xfs":
        subprocess.run(["mkfs.xfs", "-q", "-K", str(path)], check=True)


@pytest.fixture
def old_node(tmp_path: Path) -> Path:
    """A data root as the old driver left it: its records, copied unchanged, and the volumes
    and the snapshot they describe."""
    data = tmp_path / "data"
    layout = Layout(data)
    layout.ensure()
    for kind, target in (("volumes", layout.state_dir), ("snapshots", layout.snapshot_state_dir)):
        for path in sorted((FIXTURES / kind).glob("*.json")):
            shutil.copy(path, target / path.name)
    for record in fixture_records("volumes"):
        volume_id = record["volume_id"]
        if record["kind"] == "directory":
            path = layout.directory_path(volume_id)
            path.mkdir()
            os.chmod(path, int(record["parameters"]["mode"], 8))
        else:
            encrypted = record["parameters"].get("encryption") == "fscrypt"
            size = record["capacity_bytes"]
            make_image(layout.image_path(volume_id), size, record["fs_type"], encrypt=encrypted)
    for snapshot in fixture_records("snapshots"):
        make_image(
            layout.snapshot_path(snapshot["snapshot_id"], ".img"),
            snapshot["size_bytes"],
            snapshot["fs_type"],
        )
    return data


def test_new_driver_serves_and_deletes_volumes_of_schema_1(old_node: Path, tmp_path: Path) -> None:
    volumes = {r["volume_id"]: r for r in fixture_records("volumes")}
    (snapshot,) = fixture_records("snapshots")
    with running_driver(old_node) as running:
        kubelet = Kubelet(running.client, tmp_path / "kubelet", running.data_dir)
        controller = running.client.controller
        listed = controller.ListVolumes(csi_pb2.ListVolumesRequest()).entries
        # Every volume is served, with the volume context it was created with.
        assert {e.volume.volume_id: dict(e.volume.volume_context) for e in listed} == {
            i: r["parameters"] for i, r in volumes.items()
        }
        assert all(legacy_condition(e.status) == (False, "volume is healthy") for e in listed)
        # The files now hold the current schema.
        for path in (old_node / "state" / "volumes").glob("*.json"):
            assert json.loads(path.read_text())["schema"] == SCHEMA_VERSION

        for volume_id, record in volumes.items():
            if record["parameters"].get("encryption"):
                continue  # opening it needs the key its salt was made with
            block = record["access_type"] == "block"
            cap = block_capability() if block else mount_capability()
            staging = kubelet.staging(volume_id)
            target = kubelet.target(f"pod-{volume_id[-6:]}")
            kubelet.stage(volume_id, staging, cap)
            kubelet.publish(volume_id, staging, target, cap)
            if block:
                with open(target, "r+b") as device:
                    device.write(b"still here")
            else:
                (target / "file").write_text("still here")
                if record["kind"] == "directory":  # the recorded root mode still applies
                    assert (old_node / "volumes" / volume_id).stat().st_mode & 0o777 == 0o770
            kubelet.unpublish(volume_id, target)
            kubelet.unstage(volume_id, staging)

        # The allowed mount options of schema 1 still hold.
        ext4 = next(i for i, r in volumes.items() if r["name"] == "pvc-v1-ext4")
        staging = kubelet.staging("ext4-again")
        with pytest.raises(grpc.RpcError) as refused:
            kubelet.stage(ext4, staging, mount_capability(flags=("sync",)))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "allowedMountOptions" in (refused.value.details() or "")

        # A restore from the snapshot of schema 1 is a volume of the new schema.
        source = csi_pb2.VolumeContentSource(
            snapshot=csi_pb2.VolumeContentSource.SnapshotSource(snapshot_id=snapshot["snapshot_id"])
        )
        restored = controller.CreateVolume(
            csi_pb2.CreateVolumeRequest(
                name="pvc-v2-restored",
                parameters={"volumeType": "loop", "fsType": "ext4"},
                volume_capabilities=[mount_capability()],
                volume_content_source=source,
            )
        ).volume
        for volume_id in [*volumes, restored.volume_id]:
            controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id))
        controller.DeleteSnapshot(
            csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot["snapshot_id"])
        )
        assert controller.ListVolumes(csi_pb2.ListVolumesRequest()).entries == []
    assert list((old_node / "state" / "volumes").iterdir()) == []
    assert list((old_node / "images").iterdir()) == []
    assert list((old_node / "volumes").iterdir()) == []
    assert mounts_under(tmp_path) == []
    assert loops_under(tmp_path) == []


def test_an_older_data_root_is_narrowed_at_start(old_node: Path, tmp_path: Path) -> None:
    """The modes an older driver left (root as made, volumes/ 0711, records and images 0644)
    are narrowed before anything is served; the volumes' own roots are left as they are."""
    layout = Layout(old_node)
    old_modes = {layout.root: 0o755, layout.volumes_dir: 0o711}
    state = layout.root / "state"
    old_modes |= {d: 0o755 for d in layout.private_dirs() if state in (d, *d.parents)}
    for path in [*layout.state_dir.glob("*.json"), *layout.images_dir.glob("*.img")]:
        old_modes[path] = 0o644
    old_modes |= {p: 0o644 for p in layout.snapshots_dir.glob("*.img")}
    roots = {p: stat.S_IMODE(p.stat().st_mode) for p in layout.volumes_dir.iterdir()}
    wide = layout.volumes_dir / next(iter(roots)).name
    os.chmod(wide, 0o777)  # an older default root
    roots[wide] = 0o777
    for path, mode in old_modes.items():
        os.chmod(path, mode)
    with traversable(tmp_path), running_driver(old_node):
        for path in old_modes:
            expected = modes.PRIVATE_DIR if path.is_dir() else modes.PRIVATE_FILE
            assert stat.S_IMODE(path.stat().st_mode) == expected, path
        assert {p: stat.S_IMODE(p.stat().st_mode) for p in roots} == roots
        assert allowed(attempts(everything_under(old_node))) == []
