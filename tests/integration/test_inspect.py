"""``localvol-csi inspect`` beside a running driver: a staged and published loop volume
with its device, a healthy directory volume, one whose publish mount vanished behind the
driver's back, a damaged record and data no record names; text and JSON; the data dir,
the mount table and the loop devices are the same before and after."""

from __future__ import annotations

import json
from pathlib import Path

from tests.inspection import fingerprint, inspect_command, inspect_json
from tests.support.driver import RunningDriver
from tests.support.host import loops_for, mounts_under, sh
from tests.support.kubelet import DIRECTORY, EXT4, Kubelet


def test_inspect_beside_a_running_driver(
    driver: RunningDriver, kubelet: Kubelet, tmp_path: Path
) -> None:
    data = driver.data_dir
    loop_id = kubelet.create("inspect-loop", EXT4)
    dir_id = kubelet.create("inspect-dir", DIRECTORY)
    lost_id = kubelet.create("inspect-lost", DIRECTORY)
    staging, target = kubelet.staging(loop_id), kubelet.target("pod-a")
    kubelet.stage(loop_id, staging, EXT4.cap())
    kubelet.publish(loop_id, staging, target, EXT4.cap(), readonly=True)
    lost_staging, lost_target = kubelet.staging(lost_id), kubelet.target("pod-b")
    kubelet.stage(lost_id, lost_staging, DIRECTORY.cap())
    kubelet.publish(lost_id, lost_staging, lost_target, DIRECTORY.cap())
    sh("umount", str(lost_target))  # the mount vanishes behind the driver's back
    (data / "state" / "volumes" / "vol-broken.json").write_text('{"schema": 2, "volume_id"')
    (data / "images" / "vol-nobody.img").write_bytes(b"\0" * 8192)
    try:
        before = (
            fingerprint(data),
            mounts_under(tmp_path),
            loops_for(kubelet.image(loop_id)),
        )
        report = inspect_json(data)
        text = inspect_command(data)
        after = (
            fingerprint(data),
            mounts_under(tmp_path),
            loops_for(kubelet.image(loop_id)),
        )
        changed = {
            k for k in before[0].keys() | after[0].keys() if before[0].get(k) != after[0].get(k)
        }
        # A mounted ext4's image is written by the kernel (journal commits) at any time.
        changed.discard(f"images/{loop_id}.img")
        assert not changed, f"inspect changed {changed}"
        assert after[1:] == before[1:], "inspect changed the mounts or the loop devices"

        volumes = {v["volume_id"]: v for v in report["volumes"]}
        loop = volumes[loop_id]
        assert (loop["kind"], loop["fs_type"], loop["phase"]) == (
            "loop-filesystem",
            "ext4",
            "ready",
        )
        assert loop["size_bytes"] == EXT4.size
        assert loop["staging_path"] == str(staging)
        assert loop["targets"] == [{"path": str(target), "read_only": True}]
        assert loop["loop_devices"] == loops_for(kubelet.image(loop_id))
        assert len(loop["loop_devices"]) == 1
        assert loop["healthy"], loop["health"]
        assert volumes[dir_id]["healthy"]
        assert volumes[dir_id]["loop_devices"] == []
        lost = volumes[lost_id]
        assert not lost["healthy"]
        assert "no longer mounted" in lost["health"]
        (refused,) = report["refused"]
        assert Path(refused["path"]).name == "vol-broken.json"
        assert refused["reason"].startswith("unreadable")
        assert report["unaccounted"] == [str(data / "images" / "vol-nobody.img")]

        assert text.returncode == 0, text.stderr
        assert f"volume {loop_id}  name=inspect-loop" in text.stdout
        assert f"staged:    {staging}" in text.stdout
        assert f"published: {target} (read-only)" in text.stdout
        assert f"loop:      {loop['loop_devices'][0]}" in text.stdout
        assert "health:    ABNORMAL: the publish target" in text.stdout
        assert "vol-nobody.img" in text.stdout
        json.dumps(report)  # plain data
    finally:
        (data / "state" / "volumes" / "vol-broken.json").unlink()
        (data / "images" / "vol-nobody.img").unlink()
        # The driver still serves every volume: inspect locked and quarantined nothing.
        kubelet.unpublish(lost_id, lost_target)
        kubelet.unstage(lost_id, lost_staging)
        kubelet.unpublish(loop_id, target)
        kubelet.unstage(loop_id, staging)
        for volume_id in (loop_id, dir_id, lost_id):
            kubelet.delete(volume_id)
