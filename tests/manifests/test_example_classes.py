"""StorageClasses in deploy/examples (not only those of the base) are ones the driver accepts,
and an encrypted class is usable as shipped: both secrets referenced, the Secret there with a
key the driver takes, and the provisioner allowed to read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from csi.state.records import AccessType
from csi.volumes.encryption import MIN_SECRET_BYTES, SECRET_KEY
from csi.volumes.params import parse_spec
from tests.manifests.support import DEPLOY, Obj, build, load_file

PREFIX = "csi.storage.k8s.io/"
SECRET_ROLES = ("provisioner", "node-stage")
CLASSES = [
    (path, obj)
    for path in sorted((DEPLOY / "examples").rglob("*.yaml"))
    for obj in load_file(path)
    if obj.get("kind") == "StorageClass"
]


def example_id(entry: tuple[Path, Obj]) -> str:
    return str(entry[1]["metadata"]["name"])


@pytest.mark.parametrize("entry", CLASSES, ids=[example_id(c) for c in CLASSES])
def test_example_class_is_accepted_by_the_driver(entry: tuple[Path, Obj]) -> None:
    path, sc = entry
    params = sc.get("parameters", {})
    spec = parse_spec(params, [AccessType.MOUNT], [])
    if not spec.encrypted:
        return
    names = {params.get(f"{PREFIX}{role}-secret-name") for role in SECRET_ROLES}
    namespaces = {params.get(f"{PREFIX}{role}-secret-namespace") for role in SECRET_ROLES}
    assert len(names) == 1, f"create and stage must use one Secret: {names}"
    assert None not in names | namespaces, "an encrypted class needs both secret references"
    (name,) = names
    secrets = [o for p in path.parent.glob("*.yaml") for o in load_file(p) if o["kind"] == "Secret"]
    found = [s for s in secrets if s["metadata"]["name"] == name]
    assert found, f"the example ships no Secret {name}"
    value = found[0].get("stringData", {}).get(SECRET_KEY, "")
    assert len(value.encode()) >= MIN_SECRET_BYTES, f"{SECRET_KEY} missing or too short"


def test_provisioner_may_read_the_secrets_classes_name() -> None:
    assert any(
        f"{PREFIX}provisioner-secret-name" in sc.get("parameters", {}) for _, sc in CLASSES
    ), "the encrypted example's class names no provisioner secret"
    role = next(
        o
        for o in build("deploy/overlays/kind")
        if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "localvol-csi-provisioner"
    )
    assert any(
        "secrets" in rule["resources"] and "get" in rule["verbs"] for rule in role["rules"]
    ), "the provisioner's ClusterRole cannot get secrets"
