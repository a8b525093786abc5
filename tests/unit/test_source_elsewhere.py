"""A clone or restore whose source another node holds: the node's driver makes nothing,
points the claim at that node and says so (FAILED_PRECONDITION), or, when the claim cannot
be moved, names the node with RESOURCE_EXHAUSTED (so a topology-aware provisioner hands the
claim back to the scheduler); a source no node holds stays NOT_FOUND. And how the node is
found in the Kubernetes API (a source volume's PersistentVolume, a source snapshot's
VolumeSnapshotContent, page by page) and the claim moved (only from this node)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from csi.config import Config
from csi.errors import FailedPrecondition, NotFound, ResourceExhausted
from csi.kube.api import ApiError
from csi.kube.snapshot_contents import MANAGED_BY
from csi.kube.source_nodes import (
    CONTENTS,
    VOLUMES,
    SourceNodes,
    move_patch,
    snapshot_node,
    volume_node,
)
from csi.layout import Layout, snapshot_id_for_name, volume_id_for_name
from csi.locks import KeyedLocks
from csi.state.records import AccessType, VolumeKind, VolumeSpec
from csi.state.store import SnapshotStore, StateStore
from csi.volumes.manager import Volumes
from csi.volumes.params import PARAM_PVC_NAME, PARAM_PVC_NAMESPACE, claim_of
from csi.volumes.provisioning import NewVolume, Provisioner, SourceRef
from csi.volumes.snapshots import Snapshots

DRIVER = "localvol.csi.dev"
HERE, THERE = "node-b", "node-a"
KEY = f"topology.{DRIVER}/node"
DIRECTORY = VolumeSpec(VolumeKind.DIRECTORY, AccessType.MOUNT, "")
SOURCE = volume_id_for_name("source-on-a")
SNAPSHOT = snapshot_id_for_name("snapshot-on-a")


CLAIM = ("apps", "copy-data")


class Locator:
    """Knows one answer; moves claims when ``movable``; records what it was asked."""

    def __init__(self, answer: str | None, movable: bool) -> None:
        self.answer = answer
        self.movable = movable
        self.asked: list[tuple[str, str]] = []
        self.moves: list[tuple[str, str, str, str]] = []

    def node_of(self, kind: str, source_id: str) -> str | None:
        self.asked.append((kind, source_id))
        return self.answer

    def move_claim(self, namespace: str, name: str, here: str, there: str) -> bool:
        self.moves.append((namespace, name, here, there))
        return self.movable


def provisioner(tmp_path: Path, locator: Locator) -> Provisioner:
    config = Config(driver_name=DRIVER, node_id=HERE, data_dir=tmp_path, endpoint="")
    layout = Layout(tmp_path)
    layout.ensure()
    volumes = Volumes(layout, StateStore(layout))
    snapshots = Snapshots(volumes, SnapshotStore(layout))
    return Provisioner(config, volumes, snapshots, KeyedLocks(), locator)


def entries(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.parametrize(("kind", "source_id"), [("volume", SOURCE), ("snapshot", SNAPSHOT)])
def test_the_claim_is_moved_to_its_sources_node_and_nothing_is_made(
    tmp_path: Path, kind: str, source_id: str
) -> None:
    locator = Locator(THERE, movable=True)
    made = provisioner(tmp_path, locator)
    before = entries(tmp_path)
    new = NewVolume("copy", DIRECTORY, 1 << 20, source=SourceRef(kind, source_id), claim=CLAIM)
    with pytest.raises(FailedPrecondition) as refused:
        made.create(new)
    message = str(refused.value)
    assert f"is on node {THERE}, not on this node ({HERE})" in message
    assert f"the claim now names {THERE} as its node" in message
    assert source_id in message
    assert locator.asked == [(kind, source_id)]
    assert locator.moves == [(*CLAIM, HERE, THERE)]
    assert entries(tmp_path) == before


@pytest.mark.parametrize("claim", [CLAIM, None])
def test_a_claim_that_cannot_be_moved_goes_back_to_the_scheduler(
    tmp_path: Path, claim: tuple[str, str] | None
) -> None:
    locator = Locator(THERE, movable=False)
    made = provisioner(tmp_path, locator)
    before = entries(tmp_path)
    new = NewVolume("copy", DIRECTORY, 1 << 20, source=SourceRef("volume", SOURCE), claim=claim)
    with pytest.raises(ResourceExhausted) as refused:
        made.create(new)
    assert f"is on node {THERE}, not on this node ({HERE})" in str(refused.value)
    assert f"must run on {THERE}" in str(refused.value)
    assert locator.moves == ([(*CLAIM, HERE, THERE)] if claim else [])
    assert entries(tmp_path) == before


@pytest.mark.parametrize("answer", [None, HERE])
def test_a_source_no_other_node_holds_is_not_found(tmp_path: Path, answer: str | None) -> None:
    locator = Locator(answer, movable=True)
    made = provisioner(tmp_path, locator)
    new = NewVolume("copy", DIRECTORY, 1 << 20, source=SourceRef("volume", SOURCE), claim=CLAIM)
    with pytest.raises(NotFound):
        made.create(new)
    assert locator.asked == [("volume", SOURCE)]
    assert locator.moves == []


def test_a_source_held_here_is_never_looked_up(tmp_path: Path) -> None:
    locator = Locator(THERE, movable=True)
    made = provisioner(tmp_path, locator)
    source = made.create(NewVolume("source", DIRECTORY, 1 << 20))
    made.create(NewVolume("copy", DIRECTORY, 1 << 20, source=SourceRef("volume", source.volume_id)))
    assert locator.asked == []


def test_the_move_applies_only_while_the_claim_still_names_this_node() -> None:
    path = "/metadata/annotations/volume.kubernetes.io~1selected-node"
    assert move_patch(HERE, THERE) == [
        {"op": "test", "path": path, "value": HERE},
        {"op": "replace", "path": path, "value": THERE},
    ]


def pv(handle: str, node: str, driver: str = DRIVER, key: str = KEY) -> dict[str, Any]:
    term = {"matchExpressions": [{"key": key, "operator": "In", "values": [node]}]}
    return {
        "spec": {
            "csi": {"driver": driver, "volumeHandle": handle},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [term]}},
        }
    }


def content(handle: str, node: str | None, driver: str = DRIVER) -> dict[str, Any]:
    labels = {MANAGED_BY: node} if node else {}
    return {
        "metadata": {"labels": labels},
        "spec": {"driver": driver, "source": {"volumeHandle": "vol-x"}},
        "status": {"snapshotHandle": handle},
    }


def test_a_persistent_volume_names_its_node_only_for_our_driver_and_handle() -> None:
    assert volume_node(pv(SOURCE, THERE), DRIVER, SOURCE, KEY) == THERE
    assert volume_node(pv(SOURCE, THERE, driver="other"), DRIVER, SOURCE, KEY) is None
    assert volume_node(pv("vol-other", THERE), DRIVER, SOURCE, KEY) is None
    assert volume_node(pv(SOURCE, THERE, key="zone"), DRIVER, SOURCE, KEY) is None
    assert volume_node({"spec": {}}, DRIVER, SOURCE, KEY) is None


def test_a_snapshot_content_names_its_node_by_the_snapshotters_label() -> None:
    assert snapshot_node(content(SNAPSHOT, THERE), DRIVER, SNAPSHOT) == THERE
    assert snapshot_node(content(SNAPSHOT, None), DRIVER, SNAPSHOT) is None
    assert snapshot_node(content(SNAPSHOT, THERE, driver="other"), DRIVER, SNAPSHOT) is None
    imported = content("", THERE)
    imported["spec"]["source"] = {"snapshotHandle": SNAPSHOT}
    assert snapshot_node(imported, DRIVER, SNAPSHOT) == THERE


class PagedApi:
    """The API's list, in pages of two, and its JSON patch, recording what was asked."""

    def __init__(self, items: list[dict[str, Any]], fail: bool = False) -> None:
        self.items = items
        self.fail = fail
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.patches: list[tuple[str, list[dict[str, Any]]]] = []

    def patch_json(self, path: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
        if self.fail:
            raise ApiError("the test failed", 422)
        self.patches.append((path, operations))
        return {}

    def list(self, path: str, **query: str) -> dict[str, Any]:
        self.calls.append((path, query))
        if self.fail:
            raise ApiError("connection refused")
        start = int(query.get("continue") or 0)
        page = self.items[start : start + 2]
        more = start + 2 < len(self.items)
        return {"metadata": {"continue": str(start + 2) if more else ""}, "items": page}


def test_the_lookup_reads_page_after_page_until_one_names_a_node() -> None:
    api = PagedApi([pv(f"vol-{i}", "elsewhere") for i in range(4)] + [pv(SOURCE, THERE)])
    nodes = SourceNodes(api, DRIVER, KEY)  # type: ignore[arg-type]
    assert nodes.node_of("volume", SOURCE) == THERE
    assert [path for path, _ in api.calls] == [VOLUMES] * 3
    assert [query.get("continue") for _, query in api.calls] == [None, "2", "4"]
    snapshots = PagedApi([content(SNAPSHOT, THERE)])
    assert SourceNodes(snapshots, DRIVER, KEY).node_of("snapshot", SNAPSHOT) == THERE  # type: ignore[arg-type]
    assert snapshots.calls[0][0] == CONTENTS


def test_an_api_that_cannot_answer_or_holds_nothing_means_unknown() -> None:
    assert SourceNodes(PagedApi([], fail=True), DRIVER, KEY).node_of("volume", SOURCE) is None  # type: ignore[arg-type]
    assert (
        SourceNodes(PagedApi([pv("vol-x", THERE)]), DRIVER, KEY).node_of("volume", SOURCE) is None
    )  # type: ignore[arg-type]


def test_a_claim_is_moved_by_a_patch_that_holds_only_from_this_node() -> None:
    api = PagedApi([])
    nodes = SourceNodes(api, DRIVER, KEY)  # type: ignore[arg-type]
    assert nodes.move_claim("apps", "copy-data", HERE, THERE)
    assert api.patches == [
        ("/api/v1/namespaces/apps/persistentvolumeclaims/copy-data", move_patch(HERE, THERE))
    ]
    refused = SourceNodes(PagedApi([], fail=True), DRIVER, KEY)  # type: ignore[arg-type]
    assert not refused.move_claim("apps", "copy-data", HERE, THERE)


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({PARAM_PVC_NAMESPACE: "apps", PARAM_PVC_NAME: "data-web-0"}, ("apps", "data-web-0")),
        ({PARAM_PVC_NAMESPACE: "apps"}, None),
        ({PARAM_PVC_NAME: "data"}, None),
        ({PARAM_PVC_NAMESPACE: "apps", PARAM_PVC_NAME: "../../nodes/x"}, None),
        ({PARAM_PVC_NAMESPACE: "a.b", PARAM_PVC_NAME: "data"}, None),
        ({PARAM_PVC_NAMESPACE: "Apps", PARAM_PVC_NAME: "data"}, None),
        ({PARAM_PVC_NAMESPACE: "apps", PARAM_PVC_NAME: "x" * 254}, None),
    ],
)
def test_the_claim_is_taken_from_the_provisioners_parameters_only_when_well_formed(
    parameters: dict[str, str], expected: tuple[str, str] | None
) -> None:
    assert claim_of(parameters) == expected
