"""One source of truth: the names and parameters in deploy/ are the ones the code uses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from csi.cli import build_parser
from csi.config import DEFAULT_DRIVER_NAME
from csi.state.records import AccessType
from csi.units import parse_size
from csi.volumes.ephemeral import SIZE_KEY
from csi.volumes.params import parse_spec
from tests.manifests.support import DEPLOY, UPSTREAM_SIDECARS, build, lib_setting, load_file

BUILDS = ["deploy/overlays/kind", "deploy/overlays/multinode", "deploy/snapshot", UPSTREAM_SIDECARS]


def every_object() -> Iterator[dict[str, Any]]:
    for directory in BUILDS:
        yield from build(directory)
    for path in sorted((DEPLOY / "examples").rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            yield from load_file(path)


def pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = obj.get("spec", {})
    if obj.get("kind") == "Pod":
        yield spec
    elif "template" in spec:
        yield spec["template"].get("spec", {})


def test_driver_name_everywhere() -> None:
    seen = {"CSIDriver": 0, "StorageClass": 0, "VolumeSnapshotClass": 0, "inline": 0}
    for obj in every_object():
        kind = obj.get("kind")
        if kind == "CSIDriver":
            assert obj["metadata"]["name"] == DEFAULT_DRIVER_NAME
            seen[kind] += 1
        elif kind == "StorageClass":
            assert obj["provisioner"] == DEFAULT_DRIVER_NAME, obj["metadata"]["name"]
            seen[kind] += 1
        elif kind == "VolumeSnapshotClass":
            assert obj["driver"] == DEFAULT_DRIVER_NAME
            seen[kind] += 1
        for spec in pod_specs(obj):
            for volume in spec.get("volumes", []):
                if "csi" in volume:
                    assert volume["csi"]["driver"] == DEFAULT_DRIVER_NAME
                    seen["inline"] += 1
            for container in spec.get("containers", []):
                for arg in container.get("args", []):
                    if arg.startswith("--kubelet-registration-path="):
                        assert f"/plugins/{DEFAULT_DRIVER_NAME}/" in arg
    assert all(seen.values()), seen


def test_storage_class_parameters_are_accepted_by_the_driver() -> None:
    classes = [o for o in build("deploy/overlays/kind") if o.get("kind") == "StorageClass"]
    assert len(classes) >= 4
    for sc in classes:
        params = sc.get("parameters", {})
        access = AccessType.BLOCK if "block" in sc["metadata"]["name"] else AccessType.MOUNT
        parse_spec(params, [access], [])  # raises on an unknown key or a bad value
        assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
        assert sc["allowVolumeExpansion"] is True
    kinds = {sc["parameters"].get("volumeType", "loop") for sc in classes}
    fs_types = {sc["parameters"].get("csi.storage.k8s.io/fstype") for sc in classes}
    assert kinds == {"loop", "directory"}
    assert {"ext4", "xfs"} <= fs_types


def test_inline_volume_attributes_are_accepted_by_the_driver() -> None:
    for obj in every_object():
        for spec in pod_specs(obj):
            for volume in spec.get("volumes", []):
                attributes = dict(volume.get("csi", {}).get("volumeAttributes", {}))
                if SIZE_KEY in attributes:
                    parse_size(attributes.pop(SIZE_KEY))
                if "csi" in volume:
                    parse_spec(attributes, [AccessType.MOUNT], [])


def test_driver_arguments_are_driver_flags() -> None:
    daemonset = next(o for o in build("deploy/overlays/kind") if o["kind"] == "DaemonSet")
    driver = next(
        c for c in daemonset["spec"]["template"]["spec"]["containers"] if c["name"] == "driver"
    )
    args = [a.replace("$(CSI_NODE_ID)", "node-1") for a in driver["args"]]
    parsed = build_parser().parse_args(args)
    assert parsed.controller_expansion is False  # the resizer cannot run per node
    assert parsed.endpoint.startswith("unix://")


@pytest.mark.parametrize("image", ["csi-snapshotter", "snapshot-controller"])
def test_snapshotter_versions_agree_with_the_crds(image: str) -> None:
    version = lib_setting("SNAPSHOTTER_VERSION")
    tags = {
        c["image"].rpartition(":")[2]
        for directory in BUILDS
        for obj in build(directory)
        for spec in pod_specs(obj)
        for c in spec.get("containers", [])
        if c["image"].startswith(f"registry.k8s.io/sig-storage/{image}:")
    }
    assert tags == {version}, f"{image} tags {tags}, CRDs installed at {version}"
