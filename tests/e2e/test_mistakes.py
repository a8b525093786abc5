"""Issue 18 through the real cluster: every mistake a user can make in a StorageClass, a
claim or a Secret shows where they look, with its cause and its fix.

The mistakes are made as a user makes them (manifests applied with kubectl, classes with
WaitForFirstConsumer binding as deploy/base/storageclasses.yaml's, capacity tracking on),
all created up front in one namespace (classes named after it), then each test polls, at
most ``EVENT_TIMEOUT``, for the Event on the claim (the provisioner's ProvisioningFailed,
carrying CreateVolume's message) or on the pod (the kubelet's FailedMount, carrying
NodeStageVolume's), asserts the key phrases of the driver's message, and that nothing was
made on the node for a refused claim. Everything is deleted at the end: the namespace with
its objects, the classes by name."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from csi.host.mkfs import MIN_FS_SIZE
from csi.layout import volume_id_for_name
from csi.units import parse_size
from tests.e2e.cluster import (
    DRIVER,
    DRIVER_NAMESPACE,
    E2E_LABEL,
    PARAMETER_PREFIX,
    Cluster,
    claim,
    on_node,
    pod,
    secret,
    secret_parameters,
    snapshot,
    storage_class,
    wait_until,
)
from tests.e2e.conftest import WORKERS
from tests.e2e.host import loop_devices_on
from tests.support.prerequisites import need

pytestmark = pytest.mark.e2e

EVENT_TIMEOUT = 120.0
# A clone or restore waits for its source claim to bind (and a snapshot to be ready) first.
SOURCE_TIMEOUT = 240.0
DEFAULT_MAX_VOLUME_SIZE = "16Ti"  # csi/cli.py's default
NOT_ENOUGH_STORAGE = "did not have enough free storage"
KEY = secrets.token_urlsafe(32)  # the encryption key a volume is made with
OTHER_KEY = secrets.token_urlsafe(32)  # another one, given at mount
SHORT_KEY = "short-key"  # under the 16-byte minimum
ALL_KEYS = (KEY, OTHER_KEY, SHORT_KEY)


ENCRYPTED = {"volumeType": "loop", f"{PARAMETER_PREFIX}/fstype": "ext4", "encryption": "fscrypt"}


@dataclass
class Scene:
    """The namespace every mistake was made in, and the cluster-scoped classes made for it."""

    cluster: Cluster
    ns: str
    classes: list[str] = field(default_factory=list)
    max_volume_size: int = 0
    room: int = 0  # the directory class's capacity on the node, as published

    @property
    def pv_name(self) -> str:
        return f"{self.ns}-node-gone"

    def cls(self, suffix: str) -> str:
        return f"{self.ns}-{suffix}"

    def events(self, kind: str, name: str) -> list[str]:
        found = self.cluster.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.kind={kind},involvedObject.name={name}"
        )
        return [e.message or "" for e in found.items]

    def event(self, kind: str, name: str, *phrases: str, timeout: float = EVENT_TIMEOUT) -> str:
        """The first event on the object holding every phrase; fails after ``timeout``."""

        def seen() -> str:
            return next((m for m in self.events(kind, name) if all(p in m for p in phrases)), "")

        message: str = wait_until(
            f"a {kind} {self.ns}/{name} event with {phrases!r} (events: "
            f"{self.events(kind, name)!r})",
            seen,
            timeout,
            poll=2.0,
        )
        for key in ALL_KEYS:
            assert key not in message, "a secret reached an event"
        return message

    def claim_event(self, name: str, *phrases: str, timeout: float = EVENT_TIMEOUT) -> str:
        return self.event("PersistentVolumeClaim", name, *phrases, timeout=timeout)

    def pod_event(self, name: str, *phrases: str, timeout: float = EVENT_TIMEOUT) -> str:
        return self.event("Pod", name, *phrases, timeout=timeout)

    def volume_id(self, claim_name: str) -> str:
        """The ID the driver gives the claim's volume (CreateVolume's name is pvc-<uid>)."""
        uid = self.cluster.claim(self.ns, claim_name).metadata.uid
        return volume_id_for_name(f"pvc-{uid}")

    def nothing_made_for(self, claim_name: str) -> None:
        """A refused claim: no PV, and on the node no image, directory or record."""
        assert not self.cluster.claim(self.ns, claim_name).spec.volume_name
        volume_id = self.volume_id(claim_name)
        for path in (
            path
            for root in self.cluster.data_roots.values()
            for path in (
                root / "images" / f"{volume_id}.img",
                root / "volumes" / volume_id,
                root / "state" / "volumes" / f"{volume_id}.json",
            )
        ):
            assert not path.exists(), f"a refused claim left {path}"

    def scheduler_passed(self, pod_name: str) -> None:
        """The scheduler did not turn the mistake into a lack of storage."""
        assert not [m for m in self.events("Pod", pod_name) if NOT_ENOUGH_STORAGE in m]


def driver_max_volume_size(cluster: Cluster) -> int:
    """--max-volume-size as the DaemonSet gives it (or its environment variable), else the
    default."""
    daemonset = cluster.apps.read_namespaced_daemon_set("localvol-csi-node", DRIVER_NAMESPACE)
    for container in daemonset.spec.template.spec.containers:
        for arg in container.args or []:
            if arg.startswith("--max-volume-size="):
                return parse_size(arg.split("=", 1)[1])
        for env in container.env or []:
            if env.name == "CSI_MAX_VOLUME_SIZE" and env.value:
                return parse_size(env.value)
    return parse_size(DEFAULT_MAX_VOLUME_SIZE)


GONE_NODE = "node-that-was-removed"


def gone_node_volume(name: str) -> dict[str, Any]:
    """A PV of this driver's on a node that is gone (its volume ID made up: nothing of it
    is on this node)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {E2E_LABEL: "true"}},
        "spec": {
            "capacity": {"storage": "64Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "csi": {"driver": DRIVER, "volumeHandle": "vol-" + "0" * 32, "fsType": "ext4"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": f"topology.{DRIVER}/node",
                                    "operator": "In",
                                    "values": [GONE_NODE],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }


def make_every_mistake(scene: Scene) -> None:
    """Every class, Secret, claim and pod, applied up front."""
    ns, cls = scene.ns, scene.cls
    classes = [
        storage_class(cls("typo"), {"volumeType": "loop", "fsTyp": "ext4"}),
        storage_class(cls("btrfs"), {"volumeType": "loop", f"{PARAMETER_PREFIX}/fstype": "btrfs"}),
        storage_class(cls("enc-no-secret"), ENCRYPTED),
        storage_class(
            cls("enc-no-key"), {**ENCRYPTED, **secret_parameters(ns, "no-key", "no-key")}
        ),
        storage_class(cls("enc-short"), {**ENCRYPTED, **secret_parameters(ns, "short", "short")}),
        storage_class(
            cls("enc-other-key"), {**ENCRYPTED, **secret_parameters(ns, "key", "other-key")}
        ),
        storage_class(
            cls("options"),
            {"volumeType": "directory", "allowedMountOptions": "noatime"},
            mountOptions=["noatime", "sync"],
        ),
        storage_class(
            cls("options-pv"),
            {"volumeType": "loop", "allowedMountOptions": "noatime"},
            mountOptions=["noatime"],
        ),
    ]
    scene.classes = [c["metadata"]["name"] for c in classes]
    scene.cluster.apply(ns, *classes)
    scene.cluster.apply(
        ns,
        secret("no-key", {"key": KEY}),
        secret("short", {"encryptionKey": SHORT_KEY}),
        secret("key", {"encryptionKey": KEY}),
        secret("other-key", {"encryptionKey": OTHER_KEY}),
    )
    objects: list[dict[str, Any]] = []

    def claimed(
        name: str, storage_class_name: str, size: str = "64Mi", node: str = "", **spec: Any
    ) -> None:
        objects.append(claim(name, storage_class_name, size, **spec))
        if spec.get("volumeMode") == "Block":
            made = pod(name, devices={"/dev/xvda": name})
        else:
            made = pod(name, claims={"/data": name})
        objects.append(on_node(made, node) if node else made)

    claimed("typo", cls("typo"))
    claimed("btrfs", cls("btrfs"))
    claimed("tiny", "localvol-ext4", "1Mi")
    claimed("block-dir", "localvol-directory", volumeMode="Block")
    claimed("rwx", "localvol-ext4", accessModes=["ReadWriteMany"])
    claimed("rox", "localvol-ext4", accessModes=["ReadOnlyMany"])
    claimed("enc-no-secret", cls("enc-no-secret"))
    claimed("enc-no-key", cls("enc-no-key"))
    claimed("enc-short", cls("enc-short"))
    claimed("enc-other-key", cls("enc-other-key"))
    claimed("options", cls("options"))
    claimed("options-pv", cls("options-pv"))
    # Sources of another kind: a directory volume, its snapshot, a clone and a restore
    # into ext4 (the same volumeMode, so the provisioner passes them on to the driver). A
    # copy is made on its source's node: every pod of these on one worker.
    node = WORKERS[0]
    claimed("source", "localvol-directory", node=node)
    objects.append(snapshot("source-snap", "source"))
    claimed(
        "clone-other-kind",
        "localvol-ext4",
        node=node,
        dataSource={"kind": "PersistentVolumeClaim", "name": "source"},
    )
    claimed(
        "restore-other-kind",
        "localvol-ext4",
        node=node,
        dataSource={
            "apiGroup": "snapshot.storage.k8s.io",
            "kind": "VolumeSnapshot",
            "name": "source-snap",
        },
    )
    # A restore smaller than its snapshot (the provisioner refuses it itself).
    claimed("ext4-source", "localvol-ext4", "64Mi", node=node)
    objects.append(snapshot("ext4-snap", "ext4-source"))
    claimed(
        "restore-smaller",
        "localvol-ext4",
        "16Mi",
        node=node,
        dataSource={
            "apiGroup": "snapshot.storage.k8s.io",
            "kind": "VolumeSnapshot",
            "name": "ext4-snap",
        },
    )
    # A volume whose node is gone: its PV (as the provisioner wrote it) pins it to a node
    # that no longer exists, the claim is bound to it, a pod uses the claim.
    objects.append(gone_node_volume(scene.pv_name))
    objects.append(claim("node-gone", "", "64Mi", volumeName=scene.pv_name))
    if scene.max_volume_size + (1 << 20) < scene.room:
        # Above --max-volume-size but within the node's room (a directory: nothing big made).
        claimed("too-big", "localvol-directory", str(scene.max_volume_size + (1 << 20)))
    scene.cluster.apply(ns, *objects)
    # The pod comes once its claim is bound, as it would to a volume bound long ago. A pod
    # that came first was found unschedulable for the unbound claim in one cold run, and the
    # scheduler had still not said anything else of it 120 s later.
    wait_until(
        "the claim of the gone node's volume bound",
        lambda: scene.cluster.claim(ns, "node-gone").status.phase == "Bound",
        60,
    )
    scene.cluster.apply(ns, pod("node-gone", claims={"/data": "node-gone"}))


@pytest.fixture(scope="module")
def scene(cluster: Cluster) -> Iterator[Scene]:
    made = Scene(cluster, cluster.new_namespace())
    made.max_volume_size = driver_max_volume_size(cluster)
    made.room = wait_until(
        "the directory class's capacity published",
        lambda: cluster.published_capacity("localvol-directory"),
    )
    try:
        make_every_mistake(made)
        yield made
    finally:
        cluster.delete_namespace(made.ns)
        for name in made.classes:
            cluster.kubectl("delete", "storageclass", name, "--ignore-not-found")
        cluster.kubectl("delete", "pv", made.pv_name, "--ignore-not-found", "--wait=false")


# -- 1. an unknown or misspelt parameter ---------------------------------------------------
def test_misspelt_parameter(scene: Scene) -> None:
    message = scene.claim_event("typo", 'unknown parameter "fsTyp" (did you mean "fsType"?)')
    assert "known: allowedMountOptions, csi.storage.k8s.io/fstype" in message
    assert "InvalidArgument" in message
    # Capacity tracking published the class's capacity: the scheduler passed the claim.
    assert scene.cluster.published_capacity(scene.cls("typo")) > 0
    scene.scheduler_passed("typo")
    scene.nothing_made_for("typo")


# -- 2. an unsupported filesystem ----------------------------------------------------------
def test_unsupported_filesystem(scene: Scene) -> None:
    scene.claim_event("btrfs", 'fsType "btrfs" is not supported; supported: ext4, xfs')
    scene.scheduler_passed("btrfs")
    scene.nothing_made_for("btrfs")


# -- 3. sizes ------------------------------------------------------------------------------
def test_above_max_volume_size(scene: Scene) -> None:
    need(
        scene.max_volume_size + (1 << 20) < scene.room,
        f"--max-volume-size ({scene.max_volume_size} bytes) is not below the node's room "
        f"({scene.room} bytes): a claim above it is refused by the scheduler as too large",
    )
    message = scene.claim_event("too-big", "is above this driver's maximum volume size")
    assert "(--max-volume-size)" in message
    assert "OutOfRange" in message
    scene.scheduler_passed("too-big")
    scene.nothing_made_for("too-big")


def test_below_minimum_is_rounded_up_and_shown(scene: Scene) -> None:
    scene.cluster.wait_ready(scene.ns, "tiny")
    minimum = MIN_FS_SIZE["ext4"]
    capacity = wait_until(
        "the claim's status.capacity",
        lambda: (scene.cluster.claim(scene.ns, "tiny").status.capacity or {}).get("storage"),
    )
    assert parse_size(capacity) == minimum
    pv = scene.cluster.core.read_persistent_volume(
        scene.cluster.claim(scene.ns, "tiny").spec.volume_name
    )
    assert parse_size(pv.spec.capacity["storage"]) == minimum


# -- 4. block access of a directory class --------------------------------------------------
def test_block_claim_of_a_directory_class(scene: Scene) -> None:
    message = scene.claim_event(
        "block-dir", "block access (volumeMode: Block) needs a loop volume", "localvol-block"
    )
    assert "volumeType=directory" in message
    scene.nothing_made_for("block-dir")


# -- 5. multi-node access modes ------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("rwx", "MULTI_NODE_MULTI_WRITER (ReadWriteMany)"),
        ("rox", "MULTI_NODE_READER_ONLY (ReadOnlyMany)"),
    ],
)
def test_multi_node_access_mode(scene: Scene, name: str, mode: str) -> None:
    message = scene.claim_event(name, f"access mode {mode} is not supported")
    assert "volumes are local to one node" in message
    assert "use ReadWriteOnce (pods on one node share it) or ReadWriteOncePod" in message
    scene.nothing_made_for(name)


# -- 6. encryption -------------------------------------------------------------------------
def test_encryption_without_the_class_secret_parameters(scene: Scene) -> None:
    message = scene.claim_event("enc-no-secret", "needs a Secret holding the key 'encryptionKey'")
    assert "csi.storage.k8s.io/provisioner-secret-name" in message
    assert "csi.storage.k8s.io/node-stage-secret-name" in message
    scene.nothing_made_for("enc-no-secret")


def test_encryption_secret_without_the_key(scene: Scene) -> None:
    scene.claim_event("enc-no-key", "has no key 'encryptionKey'", "add encryptionKey")
    scene.nothing_made_for("enc-no-key")


def test_encryption_key_too_short(scene: Scene) -> None:
    scene.claim_event("enc-short", "encryptionKey is too short", "at least 16 bytes")
    scene.nothing_made_for("enc-short")


def test_encryption_other_key_at_mount(scene: Scene) -> None:
    message = scene.pod_event("enc-other-key", "does not match the key the volume was created with")
    assert "FailedPrecondition" in message
    assert "csi.storage.k8s.io/node-stage-secret-name" in message
    # Made (with the provisioner's key) but nothing staged with the other one.
    image = scene.cluster.image_of(scene.ns, "enc-other-key")
    assert image.exists()
    wait_until("no loop device left on the image", lambda: not loop_devices_on(image), 30.0)


# -- 7. a clone or restore of another kind -------------------------------------------------
def test_clone_of_another_kind(scene: Scene) -> None:
    message = scene.claim_event(
        "clone-other-kind",
        "is a directory volume, but this request is for a loop ext4 filesystem volume",
        timeout=SOURCE_TIMEOUT,
    )
    assert "clone or restore into a StorageClass and volumeMode of the source's kind" in message
    scene.nothing_made_for("clone-other-kind")


def test_restore_of_another_kind(scene: Scene) -> None:
    scene.claim_event(
        "restore-other-kind",
        "is a copy of a directory volume, but this request is for a loop ext4 filesystem volume",
        timeout=SOURCE_TIMEOUT,
    )
    scene.nothing_made_for("restore-other-kind")


# -- 8. mount options outside allowedMountOptions ------------------------------------------
def test_class_mount_option_not_allowed(scene: Scene) -> None:
    message = scene.claim_event("options", "mount option sync not allowed")
    assert "allowedMountOptions parameter allows only noatime" in message
    scene.nothing_made_for("options")


def test_pv_mount_option_not_allowed(scene: Scene) -> None:
    """The volume was made and used; then its PV's mountOptions were edited: the next pod's
    stage is refused, on the pod."""
    cluster, ns = scene.cluster, scene.ns
    cluster.wait_ready(ns, "options-pv")
    pv_name = cluster.claim(ns, "options-pv").spec.volume_name
    image = cluster.image_of(ns, "options-pv")
    cluster.delete_pod(ns, "options-pv")
    wait_until("the volume unstaged", lambda: not loop_devices_on(image))
    cluster.core.patch_persistent_volume(pv_name, {"spec": {"mountOptions": ["noatime", "sync"]}})
    cluster.apply(ns, pod("options-pv-again", claims={"/data": "options-pv"}))
    message = scene.pod_event("options-pv-again", "mount option sync not allowed")
    assert "InvalidArgument" in message
    assert "mountOptions of the StorageClass (and of the PV" in message
    assert not loop_devices_on(image)


def test_restore_smaller_than_its_snapshot(scene: Scene) -> None:
    scene.claim_event(
        "restore-smaller",
        "requested volume size 16777216 is less than the size",
        "for the source snapshot ext4-snap",
        timeout=SOURCE_TIMEOUT,
    )
    scene.nothing_made_for("restore-smaller")


# -- 9. a volume whose node is gone --------------------------------------------------------
def test_volume_whose_node_is_gone(scene: Scene) -> None:
    """The driver is not asked (its data was on that node): the scheduler says why."""
    message = scene.pod_event("node-gone", "didn't match PersistentVolume's node affinity")
    assert f"0/{len(scene.cluster.core.list_node().items)} nodes are available" in message
    assert scene.cluster.core.read_namespaced_pod("node-gone", scene.ns).status.phase == "Pending"
