"""hack/claim-timeline's reading of what it watches: the container runtime's timestamps and
the moments of a claim, a volume and a pod, each kept at its first sighting."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader(
        "claim_timeline", str(ROOT / "hack/claim-timeline")
    )
    spec = importlib.util.spec_from_loader("claim_timeline", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_runtime_timestamps_keep_their_microseconds() -> None:
    stamp = load().stamp
    assert stamp("2026-12-07T17:20:01.123456789Z") == 1796664001.123456
    assert stamp("2026-12-07T17:20:01Z") == 1796664001.0
    assert stamp("2026-12-07T17:20:01.5Z") == 1796664001.5


def test_each_moment_is_kept_at_its_first_sighting() -> None:
    timeline = load()
    moments = timeline.Moments()
    pending = {
        "metadata": {"name": "c", "uid": "u1", "annotations": {}},
        "status": {"phase": "Pending"},
    }
    selected = {
        "metadata": {
            "name": "c",
            "uid": "u1",
            "annotations": {"volume.kubernetes.io/selected-node": "w1"},
        },
        "status": {"phase": "Pending"},
    }
    bound = {**selected, "status": {"phase": "Bound"}}
    moments.claim(pending, 1.0)
    moments.claim(selected, 2.0)
    moments.claim(bound, 3.0)
    moments.claim(bound, 4.0)
    ns = timeline.NAMESPACE
    moments.volume({"spec": {"claimRef": {"namespace": ns, "name": "c", "uid": "old"}}}, 0.2)
    moments.volume({"spec": {"claimRef": {"namespace": ns, "name": "c", "uid": "u1"}}}, 2.5)
    moments.volume({"spec": {"claimRef": {"namespace": "elsewhere", "name": "c"}}}, 0.5)
    moments.pod({"metadata": {"name": "c"}, "spec": {"nodeName": "w1"}, "status": {}}, 3.5)
    assert moments.at["c"] == {
        "claim.selected-node": 2.0,
        "volume.created": 2.5,
        "claim.bound": 3.0,
        "pod.node": 3.5,
    }
