"""Encrypted loop volumes (issue 8): what reaches the disk, what a wrong or missing key does,
what is left readable after unstage, and that snapshots, clones and expansion keep working.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from csi.host.kernel import FAULT_ENV
from csi.pb import csi_pb2
from csi.volumes.encryption import SALT_FILE, derive_key
from tests.integration.encryption_support import (
    ENCRYPTED,
    KEY,
    OTHER_KEY,
    SHORT_KEY,
    KeyedSession,
    PsSampler,
    assert_locked,
    driver_subprocess,
    image_holds,
    mounted_read_only,
    secrets,
)
from tests.integration.snapshot_support import fs_total, has_cap_sys_resource
from tests.support.host import loops_for, sh
from tests.support.kubelet import EXT4, MIB, READER_ONLY, Kubelet
from tests.support.status import rpc_error

Code = grpc.StatusCode
MARK = f"CANARY-{uuid.uuid4().hex}"
DATA = f"{MARK}: data a pod wrote to an encrypted volume\n".encode() * 300


def test_canary_is_ciphertext_on_disk_and_plaintext_with_the_key(session: KeyedSession) -> None:
    encrypted = session.create_keyed("canary-encrypted", ENCRYPTED, KEY)
    plain = session.create("canary-plain", EXT4)
    for volume_id, key in ((encrypted, KEY), (plain, None)):
        target = session.open(volume_id, key, f"pod-{volume_id}")
        (target / f"{MARK}.txt").write_bytes(DATA)  # the canary in a name and in content
        (target / "short").write_text(MARK)
        session.close(volume_id, target)
    os.sync()

    plain_image, encrypted_image = session.kubelet.image(plain), session.kubelet.image(encrypted)
    assert image_holds(plain_image, MARK.encode()), "control: the search cannot find plaintext"
    assert not image_holds(encrypted_image, MARK.encode()), "plaintext canary in the image"
    allocated = encrypted_image.stat().st_blocks * 512 // MIB
    print(f"\ncanary search: found in the unencrypted image, not in the encrypted one "
          f"(all {ENCRYPTED.size // MIB} MiB read, {allocated} MiB allocated)")  # fmt: skip

    target = session.open(encrypted, KEY, "reader")
    assert sorted(os.listdir(target)) == sorted([f"{MARK}.txt", "short"])
    assert (target / f"{MARK}.txt").read_bytes() == DATA
    assert (target / "short").read_text() == MARK


def test_wrong_key_is_refused_and_touches_nothing(session: KeyedSession) -> None:
    volume = session.create_keyed("wrong-key", ENCRYPTED, KEY)
    target = session.open(volume, KEY, "writer")
    (target / "kept.bin").write_bytes(DATA)
    # Staged with the right key: a second stage with another key fails, the pod reads on.
    again = rpc_error(lambda: session.stage_keyed(volume, OTHER_KEY))
    assert again.code() is Code.FAILED_PRECONDITION, again.details()
    assert (target / "kept.bin").read_bytes() == DATA
    session.close(volume, target)

    refused = rpc_error(lambda: session.stage_keyed(volume, OTHER_KEY))
    details = refused.details() or ""
    assert refused.code() is Code.FAILED_PRECONDITION, details
    assert "encryptionKey" in details, details
    assert "unlock" in details, details
    # The cause and the fix (issue 18): not the key it was created with; which Secret.
    assert "does not match the key the volume was created with" in details, details
    assert "csi.storage.k8s.io/node-stage-secret-name" in details, details
    assert KEY not in details
    assert OTHER_KEY not in details
    session.nothing_on_host(volume)

    target = session.open(volume, KEY, "reader")
    assert os.listdir(target) == ["kept.bin"], "the wrong key created something"
    assert (target / "kept.bin").read_bytes() == DATA


@pytest.mark.parametrize("key", [None, "", SHORT_KEY], ids=["absent", "empty", "short"])
def test_create_without_a_usable_key_creates_nothing(session: KeyedSession, key: str) -> None:
    error = rpc_error(lambda: session.create_keyed("no-key", ENCRYPTED, key))
    assert error.code() is Code.INVALID_ARGUMENT, error.details()
    assert "encryptionKey" in (error.details() or "")
    session.nothing_created()


@pytest.mark.parametrize("key", [None, "", SHORT_KEY], ids=["absent", "empty", "short"])
def test_stage_without_a_usable_key_is_refused(session: KeyedSession, key: str) -> None:
    volume = session.create_keyed("stage-no-key", ENCRYPTED, KEY)
    error = rpc_error(lambda: session.stage_keyed(volume, key))
    assert error.code() is Code.INVALID_ARGUMENT, error.details()
    assert "encryptionKey" in (error.details() or "")
    session.nothing_on_host(volume)


@pytest.mark.parametrize("step", ["fscrypt:add-key", "fscrypt:set-policy"])
def test_a_failing_fscrypt_step_at_create_creates_nothing(
    session: KeyedSession, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    monkeypatch.setenv(FAULT_ENV, step)
    error = rpc_error(lambda: session.create_keyed("unlucky-create", ENCRYPTED, KEY))
    details = error.details() or ""
    assert error.code() is Code.INTERNAL, details
    assert step in details, details
    assert KEY not in details, details
    session.nothing_created()


@pytest.mark.parametrize("step", ["fscrypt:add-key", "fscrypt:get-policy"])
def test_a_failing_fscrypt_step_at_stage_is_undone(
    session: KeyedSession, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    volume = session.create_keyed("unlucky-stage", ENCRYPTED, KEY)
    monkeypatch.setenv(FAULT_ENV, step)
    error = rpc_error(lambda: session.stage_keyed(volume, KEY))
    details = error.details() or ""
    assert error.code() is Code.INTERNAL, details
    assert step in details, details
    assert KEY not in details, details
    session.nothing_on_host(volume)
    monkeypatch.delenv(FAULT_ENV)
    target = session.open(volume, KEY, "after")
    (target / "kept.bin").write_bytes(DATA)
    assert (target / "kept.bin").read_bytes() == DATA


def test_first_stage_may_be_read_only(session: KeyedSession) -> None:
    """CreateVolume prepares the encrypted directory, so a read-only first stage has
    nothing to write: it unlocks the volume and mounts it read-only."""
    volume = session.create_keyed("read-only-first", ENCRYPTED, KEY)
    staging = session.stage_keyed(volume, KEY, ENCRYPTED.cap(READER_ONLY))
    assert (staging / "data").is_dir()
    with pytest.raises(OSError, match="Read-only"):
        (staging / "data" / "x").write_bytes(b"x")


def test_key_is_removed_at_unstage(session: KeyedSession, tmp_path: Path) -> None:
    volume = session.create_keyed("locked", ENCRYPTED, KEY)
    session.write_and_unpublish(volume, DATA)
    session.kubelet.unstage(volume, session.kubelet.staging(volume))
    with mounted_read_only(session.kubelet.image(volume), tmp_path / "look") as root:
        assert (root / ".localvol-salt").is_file()
        assert_locked(root / "data")


def test_key_is_removed_even_if_the_filesystem_stays_mounted(
    session: KeyedSession, tmp_path: Path
) -> None:
    """A mount the driver does not know of (as a copy propagated into another mount namespace
    would be) keeps the filesystem alive after unstage: only removing the key locks it."""
    volume = session.create_keyed("lingering", ENCRYPTED, KEY)
    session.write_and_unpublish(volume, DATA)
    staging, lingering = session.kubelet.staging(volume), tmp_path / "lingering"
    lingering.mkdir()
    assert sh("mount", "--bind", "--", str(staging), str(lingering)).returncode == 0
    try:
        assert (lingering / "data" / "plain-name.txt").read_bytes() == DATA  # unlocked now
        session.kubelet.unstage(volume, staging)
        assert_locked(lingering / "data")
    finally:
        sh("umount", "--", str(lingering))
        for device in loops_for(session.kubelet.image(volume)):
            sh("losetup", "-d", device)


def test_snapshot_restore_and_clone_open_only_with_the_same_key(session: KeyedSession) -> None:
    source = session.create_keyed("enc-source", ENCRYPTED, KEY)
    source_target = session.open(source, KEY, "source")
    (source_target / "state.bin").write_bytes(DATA)  # not fsynced: the snapshot must freeze
    snapshot = session.snapshot("enc-snap", source)
    snapshot_file = session.snapshot_file(snapshot.snapshot_id)
    assert snapshot_file is not None
    assert not image_holds(snapshot_file, MARK.encode()), "plaintext in the snapshot"

    snap = snapshot.snapshot_id
    refused = rpc_error(lambda: session.create_keyed("plain", EXT4, None, snapshot_id=snap))
    assert refused.code() is Code.INVALID_ARGUMENT, "an encrypted snapshot restored unencrypted"
    # A class pointing at another Secret: created (the driver cannot tell), never opened.
    other = session.create_keyed("enc-other", ENCRYPTED, OTHER_KEY, snapshot_id=snap)
    error = rpc_error(lambda: session.stage_keyed(other, OTHER_KEY))
    assert error.code() is Code.FAILED_PRECONDITION, error.details()
    session.nothing_on_host(other)

    restored = session.create_keyed("enc-restored", ENCRYPTED, KEY, snapshot_id=snap)
    clone = session.create_keyed("enc-clone", ENCRYPTED, KEY, source_volume_id=source)
    (source_target / "state.bin").write_bytes(b"changed after the copies\n")
    for copy in (restored, clone):
        error = rpc_error(lambda copy=copy: session.stage_keyed(copy, OTHER_KEY))  # type: ignore[misc]
        assert error.code() is Code.FAILED_PRECONDITION, error.details()
        session.nothing_on_host(copy)
        target = session.open(copy, KEY, f"pod-{copy}")
        assert (target / "state.bin").read_bytes() == DATA


def test_expansion_keeps_encrypted_data(session: KeyedSession) -> None:
    volume = session.create_keyed("enc-grow", ENCRYPTED, KEY)
    target = session.open(volume, KEY, "before")
    (target / "kept.bin").write_bytes(DATA)
    before = fs_total(target)
    session.close(volume, target)

    reply = session.expand(volume, 2 * ENCRYPTED.size)
    assert reply.capacity_bytes == 2 * ENCRYPTED.size
    assert reply.node_expansion_required
    target = session.open(volume, KEY, "after")
    assert fs_total(target) > 1.8 * before, "the filesystem did not grow at stage"
    assert (target / "kept.bin").read_bytes() == DATA
    if has_cap_sys_resource():  # online growth, as the kubelet asks for it
        session.node_expand(volume, target, 3 * ENCRYPTED.size)
        assert fs_total(target) > 2.7 * before, "the mounted filesystem did not grow"
        assert (target / "kept.bin").read_bytes() == DATA


@pytest.mark.parametrize(
    ("params", "block"),
    [
        ({"volumeType": "loop", "fsType": "xfs"}, False),
        ({"volumeType": "loop"}, True),
        ({"volumeType": "directory"}, False),
    ],
    ids=["xfs", "block", "directory"],
)
def test_encryption_is_refused_where_ext4_cannot_give_it(
    session: KeyedSession, params: dict[str, str], block: bool
) -> None:
    cap = ENCRYPTED.cap() if not block else csi_pb2.VolumeCapability(
        block=csi_pb2.VolumeCapability.BlockVolume(), access_mode=ENCRYPTED.cap().access_mode
    )  # fmt: skip
    request = csi_pb2.CreateVolumeRequest(
        name="refused",
        parameters={**params, "encryption": "fscrypt"},
        capacity_range=csi_pb2.CapacityRange(required_bytes=320 * MIB),
        volume_capabilities=[cap],
        secrets=secrets(KEY),
    )
    error = rpc_error(lambda: session.controller.CreateVolume(request))
    assert error.code() is Code.INVALID_ARGUMENT, error.details()
    assert "encryption" in (error.details() or "")
    session.nothing_created()


def test_measure_encryption_cost(session: KeyedSession) -> None:
    """Median stage+unstage time, encrypted against plain ext4, interleaved in one run."""
    encrypted = session.create_keyed("cost-encrypted", ENCRYPTED, KEY)
    plain = session.create("cost-plain", EXT4)
    kubelet, cap = session.kubelet, ENCRYPTED.cap()
    spent: dict[str, list[float]] = {encrypted: [], plain: []}
    for cycle in range(11):  # the first cycle sets up data/ and the salt: not counted
        for volume, key in ((encrypted, KEY), (plain, None)):
            staging = kubelet.staging(volume)
            request = csi_pb2.NodeStageVolumeRequest(
                volume_id=volume, staging_target_path=str(staging), volume_capability=cap,
                secrets=secrets(key))  # fmt: skip
            started = time.perf_counter()
            kubelet.client.node.NodeStageVolume(request)
            kubelet.unstage(volume, staging)
            if cycle:
                spent[volume].append((time.perf_counter() - started) * 1000)
    with_key, without = statistics.median(spent[encrypted]), statistics.median(spent[plain])
    print(f"\nENCRYPTION-COST stage+unstage median of 10: encrypted {with_key:.1f} ms, "
          f"unencrypted ext4 {without:.1f} ms, ratio {with_key / without:.2f}")  # fmt: skip


def test_keys_never_leak(tmp_path: Path) -> None:
    """Driver at debug level in its own process: neither the secret nor the derived key
    reaches a log line, a status message, a file under the data root, or ``ps``."""
    data, log = tmp_path / "data", tmp_path / "driver.log"
    statuses: list[str] = []

    def refused(call: Callable[[], object], code: grpc.StatusCode) -> None:
        error = rpc_error(call)
        assert error.code() is code, error.details()
        statuses.extend([error.details() or "", repr(error.trailing_metadata())])
        statuses.append(error.debug_error_string())  # type: ignore[attr-defined]

    with PsSampler() as ps, driver_subprocess(data, log) as client:
        session = KeyedSession(Kubelet(client, tmp_path / "kubelet", data))
        try:
            short = lambda: session.create_keyed("leak-short", ENCRYPTED, SHORT_KEY)  # noqa: E731
            refused(short, Code.INVALID_ARGUMENT)
            volume = session.create_keyed("leak", ENCRYPTED, KEY)
            staging = session.stage_keyed(volume, KEY)
            salt = bytes.fromhex((staging / SALT_FILE).read_text().strip())
            target = session.publish_to(volume, "pod")
            (target / "file").write_bytes(DATA)
            refused(lambda: session.stage_keyed(volume, OTHER_KEY), Code.FAILED_PRECONDITION)
            session.close(volume, target)
            refused(lambda: session.stage_keyed(volume, OTHER_KEY), Code.FAILED_PRECONDITION)
            refused(lambda: session.stage_keyed(volume, SHORT_KEY), Code.INVALID_ARGUMENT)
            refused(lambda: session.stage_keyed(volume, None), Code.INVALID_ARGUMENT)
            files = [p for p in data.rglob("*") if p.is_file() and not p.is_symlink()]
            contents = {p: p.read_bytes() for p in files if p.stat().st_size < 100 * MIB}
        finally:
            session.tidy()
    keys = [derive_key(k.encode(), salt) for k in (KEY, OTHER_KEY)]
    needles = [KEY, OTHER_KEY, *(k.hex() for k in keys), *(k.hex().upper() for k in keys)]
    text = log.read_text(errors="replace")
    assert "event=rpc_request" in text, "debug request logging was not on"
    assert "FAILED_PRECONDITION" in text, "the wrong-key stage was not logged"
    assert any("enc-node" in line for line in ps.lines), f"ps never saw the driver ({ps.samples})"
    assert any("state" in str(p) for p in contents), "no state files were read"
    for needle in needles:
        assert needle not in text, "a key in the driver's log"
        assert not [s for s in statuses if needle in s], "a key in a status message"
        assert not [line for line in ps.lines if needle in line], "a key in ps output"
    raw = [n.encode() for n in needles] + keys
    leaked = sorted(str(p) for p, content in contents.items() if any(r in content for r in raw))
    assert leaked == [], f"a key in files under the data root: {leaked}"
    lines, seen = len(text.splitlines()), f"{len(ps.lines)} ps lines ({ps.samples} samples)"
    print(f"\nkeys: {lines} log lines, {len(statuses)} statuses, {len(contents)} files, {seen}")
