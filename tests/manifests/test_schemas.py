"""Every manifest, as kustomize builds it and as the examples are applied, matches the API
schemas of the targeted Kubernetes version (or the snapshot CRDs): unknown fields fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.manifests.support import DEPLOY, build, describe, load_file, validate

BUILDS = [
    "deploy/overlays/kind",
    "deploy/overlays/multinode",
    "deploy/overlays/kind-e2e",
    "deploy/snapshot",
]
EXAMPLES = sorted(
    p for p in (DEPLOY / "examples").rglob("*.yaml") if p.name != "kustomization.yaml"
)


@pytest.mark.parametrize("directory", BUILDS)
def test_kustomize_build_matches_api_schemas(directory: str) -> None:
    objects = build(directory)
    assert objects, f"{directory} builds to nothing"
    for obj in objects:
        try:
            validate(obj)
        except Exception as exc:
            pytest.fail(f"{directory}: {describe(obj)} is invalid: {str(exc)[:600]}")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_example_matches_api_schemas(path: Path) -> None:
    for obj in load_file(path):
        try:
            validate(obj)
        except Exception as exc:
            pytest.fail(f"{path.name}: {describe(obj)} is invalid: {str(exc)[:600]}")


def test_a_typo_is_caught() -> None:
    """The checks above can fail: a misspelt field in a real object is refused."""
    daemonset = next(o for o in build("deploy/overlays/kind") if o["kind"] == "DaemonSet")
    broken = {**daemonset, "spec": {**daemonset["spec"], "updateStrategyy": {}}}
    with pytest.raises(Exception, match="updateStrategyy"):
        validate(broken)
    snapshot_class = next(o for o in build("deploy/snapshot") if o["kind"] == "VolumeSnapshotClass")
    with pytest.raises(Exception, match="deletionPolcy"):
        validate({**snapshot_class, "deletionPolcy": "Delete"})
