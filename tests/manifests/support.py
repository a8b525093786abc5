"""Builds and schemas for the manifest checks: kustomize output, Kubernetes API schemas
(kubernetes-validate's bundled OpenAPI for the targeted version) and the snapshot CRDs'
schemas (fetched from the Go module proxy at the version deploy/ pins, never committed)."""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.prerequisites import need

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The Kubernetes version kind v0.33.0 runs (hack/lib.sh pins kind).
K8S_VERSION = "1.37.0"
SNAPSHOT_GROUPS = ("snapshot.storage.k8s.io", "groupsnapshot.storage.k8s.io")
MONITORING_GROUP = "monitoring.coreos.com"  # the Prometheus Operator's CRDs
# An overlay with deploy/components/upstream-sidecars, written as that component says.
UPSTREAM_SIDECARS = "tests/manifests/upstream-sidecars"
Obj = dict[str, Any]


def lib_setting(name: str) -> str:
    """A VERSION-style default from hack/lib.sh, e.g. SNAPSHOTTER_VERSION."""
    for line in (ROOT / "hack" / "lib.sh").read_text().splitlines():
        if line.startswith(f'{name}="${{{name}:-'):
            return line.split(":-", 1)[1].rstrip('}"')
    raise AssertionError(f"{name} is not set in hack/lib.sh")


def gobin() -> Path:
    return Path(os.environ.get("GOBIN", "/var/cache/localvol-csi/go-bin"))


def kustomize_command() -> list[str]:
    candidates = [
        os.environ.get("KUSTOMIZE"),
        str(gobin() / "kustomize"),
        shutil.which("kustomize"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return [candidate, "build"]
    need(False, "kustomize not found (hack/test builds it with go install)")
    raise AssertionError("unreachable")


def build(directory: str) -> tuple[Obj, ...]:
    """The objects ``kustomize build`` makes of ``directory`` (relative to the repo): fresh
    ones at every call (the build is cached, the objects are not, so no test can change
    another's)."""
    return tuple(d for d in yaml.safe_load_all(_built(directory)) if d)


@functools.cache
def _built(directory: str) -> str:
    proc = subprocess.run(
        [*kustomize_command(), str(ROOT / directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, f"kustomize build {directory} failed:\n{proc.stderr}"
    return proc.stdout


def load_file(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@functools.cache
def module_dir(module: str, version: str) -> Path:
    """Source of a Go module from the module proxy (cached by Go)."""
    need(shutil.which("go") is not None, "go is needed to fetch pinned upstream sources")
    env = {**os.environ, "GOFLAGS": "-modcacherw"}
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        check=False,
        cwd="/tmp",
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, f"go mod download {module}@{version}: {proc.stderr or proc.stdout}"
    return Path(json.loads(proc.stdout)["Dir"])


def _closed(schema: Any) -> Any:
    """A copy of a CRD schema that refuses unknown fields, as the API server prunes them
    (so a typo is silently dropped there, and caught here)."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@functools.cache
def snapshot_schemas() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> closed JSON schema, for every served snapshot CRD version."""
    crd_dir = (
        module_dir(
            "github.com/kubernetes-csi/external-snapshotter/client/v8",
            lib_setting("SNAPSHOTTER_VERSION"),
        )
        / "config"
        / "crd"
    )
    return crd_schemas(crd_dir)


@functools.cache
def monitoring_schemas() -> dict[tuple[str, str], Any]:
    """The same for the Prometheus Operator's CRDs (PodMonitor, ServiceMonitor...)."""
    module = module_dir(
        "github.com/prometheus-operator/prometheus-operator",
        lib_setting("PROMETHEUS_OPERATOR_VERSION"),
    )
    return crd_schemas(module / "example" / "prometheus-operator-crd")


class _CrdLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML 1.1 reads a bare ``=`` (an enum value of relabelling actions in the Prometheus
    Operator's CRDs) as the obsolete "value" tag; it is the string "=". libyaml's parser
    where PyYAML has it: the Prometheus Operator's CRDs are megabytes."""


_CrdLoader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_yaml_str)


def crd_schemas(crd_dir: Path) -> dict[tuple[str, str], Any]:
    schemas: dict[tuple[str, str], Any] = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=_CrdLoader):
            if not crd:
                continue
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served"):
                    continue
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                props = schema.setdefault("properties", {})
                props["metadata"] = {"type": "object"}  # ObjectMeta is checked by the server
                schemas[(f"{group}/{version['name']}", kind)] = _closed(schema)
    assert schemas, f"no CRDs found in {crd_dir}"
    return schemas


def validate(obj: Obj) -> None:
    """Raise if ``obj`` does not match its API schema (unknown fields included)."""
    import kubernetes_validate

    api_version = obj.get("apiVersion", "")
    group = api_version.split("/")[0]
    if group in (*SNAPSHOT_GROUPS, MONITORING_GROUP):
        crd_validator(api_version, obj.get("kind", "")).validate(obj)
        return
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@functools.cache
def crd_validator(api_version: str, kind: str) -> Any:
    """A validator of a served CRD's schema, the schema itself checked once (checking the
    monitoring CRDs' schemas took most of each object's validation)."""
    import jsonschema

    group = api_version.split("/")[0]
    crds = monitoring_schemas() if group == MONITORING_GROUP else snapshot_schemas()
    schema = crds.get((api_version, kind))
    assert schema is not None, f"no served CRD schema for {api_version} {kind}"
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    return validator(schema)


def describe(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')}/{meta.get('namespace', '')}/{meta.get('name')}"
