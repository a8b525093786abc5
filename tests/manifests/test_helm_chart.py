"""The Helm chart: `helm lint` passes, its objects match the API schemas, and it renders the
very objects of the kustomize builds (defaults = deploy/overlays/multinode; ci/*-values.yaml
= the other overlays), so deploy/ stays the one source of the names and settings."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from csi.cli import build_parser
from tests.manifests.helm import CHART, by_identity, helm, template, values_file
from tests.manifests.support import (
    DEPLOY,
    UPSTREAM_SIDECARS,
    build,
    describe,
    load_file,
    validate,
)

# values file (None: the chart's defaults) -> the kustomize build it must equal.
EQUIVALENTS = {
    None: "deploy/overlays/multinode",
    "kind": "deploy/overlays/kind",
    "kind-e2e": "deploy/overlays/kind-e2e",
    "upstream-sidecars": UPSTREAM_SIDECARS,
}


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two parsed objects differ, as paths (for a readable failure)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                out.append(f"{path}/{key}: {a.get(key)!r} != {b.get(key)!r}")
            else:
                out += differences(a[key], b[key], f"{path}/{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{path}/{i}")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def options(values: str | None) -> tuple[str, ...]:
    return () if values is None else ("-f", str(values_file(values)))


def test_helm_is_v4() -> None:
    proc = helm("version", "--short")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("v4."), proc.stdout


@pytest.mark.parametrize("values", list(EQUIVALENTS), ids=lambda v: v or "defaults")
def test_helm_lint(values: str | None) -> None:
    proc = helm("lint", "--strict", str(CHART), *options(values))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("values", list(EQUIVALENTS), ids=lambda v: v or "defaults")
def test_chart_renders_the_kustomize_objects(values: str | None) -> None:
    rendered = by_identity(template(*options(values)))
    built = by_identity(build(EQUIVALENTS[values]))
    assert sorted(rendered) == sorted(built), "the chart and kustomize make different objects"
    for key, obj in built.items():
        # Exactly, the order of lists included: a pod template that differs only in its
        # volumes' order is still a new template, and `helm install --take-ownership` over
        # kubectl's objects would roll every node pod (tests/e2e/test_helm.py).
        diff = differences(rendered[key], obj)
        assert not diff, f"{describe(obj)}: chart != {EQUIVALENTS[values]}: {diff[:5]}"


@pytest.mark.parametrize(
    "extra",
    [(), ("--set", "metrics.podMonitor.enabled=true"), ("--set", "driverName=other.example.com")],
    ids=["defaults", "pod-monitor", "driver-name"],
)
def test_rendered_objects_match_api_schemas(extra: tuple[str, ...]) -> None:
    for obj in template(*extra):
        try:
            validate(obj)
        except Exception as exc:
            pytest.fail(f"{describe(obj)} is invalid: {str(exc)[:600]}")


def test_pod_monitor_is_the_example_in_deploy() -> None:
    (example,) = load_file(DEPLOY / "monitoring" / "podmonitor.yaml")
    rendered = [
        o for o in template("--set", "metrics.podMonitor.enabled=true") if o["kind"] == "PodMonitor"
    ]
    assert rendered == [example]
    assert not [o for o in template() if o["kind"] == "PodMonitor"]


def test_driver_name_reaches_every_reference() -> None:
    name = "other.example.com"
    objects = template("--set", f"driverName={name}")
    text = json.dumps(objects)
    assert "localvol.csi.dev" not in text
    (driver,) = [o for o in objects if o["kind"] == "CSIDriver"]
    assert driver["metadata"]["name"] == name
    assert {o["provisioner"] for o in objects if o["kind"] == "StorageClass"} == {name}
    assert {o["driver"] for o in objects if o["kind"] == "VolumeSnapshotClass"} == {name}
    (daemonset,) = [o for o in objects if o["kind"] == "DaemonSet"]
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(
        [a.replace("$(CSI_NODE_ID)", "node-1") for a in container["args"]]
    )
    assert args.driver_name == name
    assert args.kubelet_registration_path == f"/var/lib/kubelet/plugins/{name}/csi.sock"


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("storageClases=[]", "storageClases"),
        ("registration=sidecars", "registration"),
        ("healthPort=0", "healthPort"),
        ("images.driver.tagg=1", "tagg"),
    ],
)
def test_values_schema_refuses_mistakes(setting: str, complaint: str) -> None:
    proc = helm("template", "x", str(CHART), "--set", setting)
    assert proc.returncode != 0, f"--set {setting} was accepted"
    assert re.search(complaint, proc.stderr), proc.stderr


def test_every_value_is_in_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    import yaml

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == set(schema["properties"])
