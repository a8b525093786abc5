"""Volumes as pods see them, through the real kubelet, the sidecars and deploy/ as it is.

Each scenario runs in a namespace of its own, all of them side by side (they spend their
time waiting on the cluster); each is one test in the report."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests.e2e.cluster import (
    Cluster,
    claim,
    pod,
    secret,
    secret_parameters,
    snapshot,
    storage_class,
    wait_until,
)
from tests.e2e.host import loop_devices_on
from tests.integration.snapshot_support import has_cap_sys_resource

pytestmark = pytest.mark.e2e

FILESYSTEM_CLASSES = ["localvol-ext4", "localvol-xfs", "localvol-directory"]
# Random bytes a pod writes; their checksum is what a later reader must see.
WRITE = "head -c 4194304 /dev/urandom > /data/blob && md5sum /data/blob | cut -d' ' -f1"
READ = "md5sum /data/blob | cut -d' ' -f1"


def size_of(cluster: Cluster, ns: str, pod_name: str, path: str) -> int:
    """Bytes of the filesystem mounted at ``path`` in the pod, as df reports them."""
    return int(cluster.exec(ns, pod_name, f"df -k {path} | awk 'NR==2 {{print $2}}'")) * 1024


def data_outlives_its_pod(cluster: Cluster, ns: str, storage_class: str) -> None:
    cluster.apply(ns, claim("data", storage_class), pod("writer", claims={"/data": "data"}))
    cluster.wait_ready(ns, "writer")
    written = cluster.exec(ns, "writer", f"{WRITE} && sync")
    cluster.delete_pod(ns, "writer")
    cluster.apply(ns, pod("reader", claims={"/data": "data"}))
    cluster.wait_ready(ns, "reader")
    assert cluster.exec(ns, "reader", READ) == written


def pods_share_a_volume(cluster: Cluster, ns: str, storage_class: str) -> None:
    cluster.apply(
        ns,
        claim("shared", storage_class),
        pod("a", claims={"/data": "shared"}),
        pod("b", claims={"/data": "shared"}),
        pod("ro", claims={"/data": "shared"}, read_only=("/data",)),
    )
    cluster.wait_ready(ns, "a", "b", "ro")
    cluster.exec(ns, "a", "echo from-a > /data/a")
    cluster.exec(ns, "b", "echo from-b > /data/b")
    assert cluster.exec(ns, "b", "cat /data/a") == "from-a\n"
    assert cluster.exec(ns, "a", "cat /data/b") == "from-b\n"
    assert cluster.exec(ns, "ro", "cat /data/a /data/b") == "from-a\nfrom-b\n"
    refused = cluster.exec(ns, "ro", "echo x > /data/c 2>&1 && echo written || echo refused")
    assert refused.strip().endswith("refused")
    assert cluster.exec(ns, "a", "ls /data/c 2>/dev/null || echo absent") == "absent\n"


def raw_block_device(cluster: Cluster, ns: str) -> None:
    block = claim("raw", "localvol-block", volumeMode="Block")
    write = (
        "head -c 1048576 /dev/urandom > /tmp/blob && dd if=/tmp/blob of=/dev/xvda bs=1M "
        "seek=3 conv=fsync 2>/dev/null && md5sum /tmp/blob | cut -d' ' -f1"
    )
    read = "dd if=/dev/xvda bs=1M skip=3 count=1 2>/dev/null | md5sum | cut -d' ' -f1"
    cluster.apply(ns, block, pod("writer", devices={"/dev/xvda": "raw"}))
    cluster.wait_ready(ns, "writer")
    assert cluster.exec(ns, "writer", "blockdev --getsize64 /dev/xvda") == f"{1 << 30}\n"
    written = cluster.exec(ns, "writer", write)
    cluster.delete_pod(ns, "writer")
    cluster.apply(ns, pod("reader", devices={"/dev/xvda": "raw"}))
    cluster.wait_ready(ns, "reader")
    assert cluster.exec(ns, "reader", read) == written


def snapshot_ready(cluster: Cluster, ns: str, name: str) -> bool:
    found = cluster.custom.get_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", ns, "volumesnapshots", name
    )
    return bool(found.get("status", {}).get("readyToUse"))


def snapshot_restore_and_clone(cluster: Cluster, ns: str, storage_class: str) -> None:
    cluster.apply(ns, claim("source", storage_class), pod("source", claims={"/data": "source"}))
    cluster.wait_ready(ns, "source")
    first = cluster.exec(ns, "source", f"{WRITE} && sync")
    cluster.apply(ns, snapshot("snap", "source"))
    wait_until("the snapshot ready", lambda: snapshot_ready(cluster, ns, "snap"))
    second = cluster.exec(ns, "source", f"{WRITE} && sync")
    assert second != first
    restore_source = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot"}
    cluster.apply(
        ns,
        claim("restored", storage_class, dataSource={**restore_source, "name": "snap"}),
        claim(
            "cloned", storage_class, dataSource={"kind": "PersistentVolumeClaim", "name": "source"}
        ),
        pod("restored", claims={"/data": "restored"}),
        pod("cloned", claims={"/data": "cloned"}),
    )
    cluster.wait_ready(ns, "restored", "cloned")
    assert cluster.exec(ns, "restored", READ) == first
    assert cluster.exec(ns, "cloned", READ) == second
    cluster.exec(ns, "cloned", "echo changed > /data/blob")
    assert cluster.exec(ns, "source", READ) == second


def node_resize_error(cluster: Cluster, ns: str) -> str:
    conditions = cluster.claim(ns, "grow").status.conditions or []
    found = [c.message for c in conditions if c.type == "NodeResizeError"]
    return found[0] if found and "next time the volume is staged" in found[0] else ""


def expansion_seen_in_the_pod(cluster: Cluster, ns: str, storage_class: str) -> None:
    cluster.apply(ns, claim("grow", storage_class), pod("app", claims={"/data": "grow"}))
    cluster.wait_ready(ns, "app")
    written = cluster.exec(ns, "app", f"{WRITE} && sync")
    before = size_of(cluster, ns, "app", "/data")
    cluster.core.patch_namespaced_persistent_volume_claim(
        "grow", ns, {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}
    )
    online = storage_class == "localvol-xfs" or has_cap_sys_resource()
    if not online:
        # ext4 without CAP_SYS_RESOURCE: the driver grows the image, refuses the online
        # step and says on the claim that the next stage grows the filesystem; the user
        # restarts the pod.
        wait_until("the claim to say the pod must restart", lambda: node_resize_error(cluster, ns))
        cluster.delete_pod(ns, "app")
        # The node unstages the volume (its loop device goes) before the pod comes back.
        image = cluster.image_of(ns, "grow")
        wait_until("the volume unstaged", lambda: not loop_devices_on(image))
        cluster.apply(ns, pod("app", claims={"/data": "grow"}))
        cluster.wait_ready(ns, "app")
    wait_until(
        "the filesystem grown", lambda: size_of(cluster, ns, "app", "/data") > before * 3 // 2
    )
    wait_until(
        "the claim's capacity 2Gi",
        lambda: (cluster.claim(ns, "grow").status.capacity or {}).get("storage") == "2Gi",
    )
    assert cluster.exec(ns, "app", READ) == written


def encrypted_claim(cluster: Cluster, ns: str) -> None:
    canary = f"canary-{secrets.token_hex(16)}"
    key = secrets.token_urlsafe(48)
    storage_class_name = f"localvol-encrypted-{ns}"
    cluster.apply(ns, secret("key", {"encryptionKey": key}))
    parameters = {"volumeType": "loop", "encryption": "fscrypt"}
    cluster.apply(
        ns, storage_class(storage_class_name, {**parameters, **secret_parameters(ns, "key", "key")})
    )
    try:
        cluster.apply(
            ns,
            claim("secret-data", storage_class_name),
            pod("app", claims={"/data": "secret-data"}),
        )
        cluster.wait_ready(ns, "app")
        cluster.exec(ns, "app", f"for i in 1 2 3 4; do echo {canary}; done > /data/canary && sync")
        assert cluster.exec(ns, "app", "cat /data/canary").count(canary) == 4
        image = cluster.image_of(ns, "secret-data")
        cluster.delete_pod(ns, "app")  # unmounted: nothing cached in the clear
        assert image.stat().st_size > 0
        assert canary.encode() not in image.read_bytes()
        cluster.apply(ns, pod("again", claims={"/data": "secret-data"}))
        cluster.wait_ready(ns, "again")
        assert cluster.exec(ns, "again", "cat /data/canary").count(canary) == 4
    finally:
        cluster.delete(ns, "pod", "again")
        cluster.delete(ns, "pvc", "secret-data")
        cluster.kubectl("delete", "storageclass", storage_class_name, "--ignore-not-found")


Scenario = Callable[..., None]
SCENARIOS: dict[str, tuple[Scenario, tuple[str, ...]]] = {
    **{f"data_outlives_its_pod[{c}]": (data_outlives_its_pod, (c,)) for c in FILESYSTEM_CLASSES},
    **{
        f"pods_share_a_volume[{c}]": (pods_share_a_volume, (c,))
        for c in ("localvol-ext4", "localvol-directory")
    },
    "raw_block_device": (raw_block_device, ()),
    **{
        f"snapshot_restore_and_clone[{c}]": (snapshot_restore_and_clone, (c,))
        for c in ("localvol-xfs", "localvol-directory")
    },
    **{
        f"expansion_seen_in_the_pod[{c}]": (expansion_seen_in_the_pod, (c,))
        for c in ("localvol-xfs", "localvol-ext4")
    },
    "encrypted_claim": (encrypted_claim, ()),
}


@pytest.fixture(scope="module")
def scenario_runs(cluster: Cluster) -> Iterator[dict[str, Future[None]]]:
    def run(scenario: Scenario, args: tuple[str, ...]) -> None:
        ns = cluster.new_namespace()
        try:
            scenario(cluster, ns, *args)
        finally:
            cluster.delete_namespace(ns)

    with ThreadPoolExecutor(max_workers=len(SCENARIOS)) as pool:
        yield {name: pool.submit(run, *entry) for name, entry in SCENARIOS.items()}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_volume(scenario_runs: dict[str, Future[None]], scenario: str) -> None:
    scenario_runs[scenario].result(timeout=1200)
