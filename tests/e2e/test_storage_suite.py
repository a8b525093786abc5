"""Kubernetes' external-storage suite against deploy/ in the test cluster: one test per
test-driver definition of the default selection, failing on any failed spec; per test
suite passed/skipped/failed go to the e2e summary. What runs and what is skipped (and why):
tests/e2e/storage_suite.py and tests/e2e/README.md.

The first tests need no cluster: the definitions say what deploy/ and the driver do (the
suite ignores keys it does not know, so a misspelt capability would silently test less)."""

from __future__ import annotations

import re
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import yaml

from csi.config import Config
from csi.host.mkfs import MIN_FS_SIZE
from csi.units import parse_size
from tests.e2e import storage_suite
from tests.e2e.cluster import REPO, Cluster, wait_until

SELECTION = storage_suite.SELECTIONS["default"]
# The label the e2e framework puts on the namespaces it makes.
SUITE_LABEL = "e2e-run"

# The test-driver file's schema in the suite's version (test/e2e/storage/external and
# test/e2e/storage/framework/testdriver.go of k8s.io/kubernetes v1.37).
TOP_KEYS = {
    "DriverInfo",
    "StorageClass",
    "VolumeAttributesClass",
    "SnapshotClass",
    "GroupSnapshotClass",
    "InlineVolumes",
    "ClientNodeName",
    "NodeSelectors",
    "Timeouts",
}
DRIVER_INFO_KEYS = {
    "Name",
    "InTreePluginName",
    "TestTags",
    "MaxFileSize",
    "SupportedSizeRange",
    "SupportedFsType",
    "SupportedMountOption",
    "RequiredMountOption",
    "Capabilities",
    "RequiredAccessModes",
    "TopologyKeys",
    "NumAllowedTopologies",
    "StressTestOptions",
    "VolumeSnapshotStressTestOptions",
    "VolumeModifyStressTestOptions",
    "PerformanceTestOptions",
    "VolumeGroupSnapshotStressTestOptions",
}
CAPABILITIES = {
    "persistence",
    "block",
    "fsGroup",
    "volumeMountGroup",
    "exec",
    "snapshotDataSource",
    "snapshotMetadata",
    "groupSnapshot",
    "pvcDataSource",
    "multipods",
    "RWX",
    "controllerExpansion",
    "nodeExpansion",
    "offlineExpansion",
    "onlineExpansion",
    "volumeLimits",
    "singleNodeVolume",
    "topology",
    "capacity",
    "FSResizeFromSourceNotSupported",
    "readWriteOncePod",
    "multiplePVsSameID",
    "capReadOnlyMany",
    "seLinuxMount",
}
CLASS_SOURCES = {"FromName", "FromFile", "FromExistingClassName"}
INLINE_KEYS = {"Attributes", "Shared", "ReadOnly"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def deploy_documents(*parts: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / "deploy").joinpath(*parts).read_text()) if d]


def driver_args() -> list[str]:
    (daemonset,) = deploy_documents("base", "daemonset.yaml")
    containers = daemonset["spec"]["template"]["spec"]["containers"]
    (driver,) = [c for c in containers if c["name"] == "driver"]
    return list(driver["args"])


def cluster_max_volume_size() -> int:
    patch = load(REPO / "deploy" / "overlays" / "kind-e2e" / "patches" / "max-volume-size.yaml")
    (driver,) = patch["spec"]["template"]["spec"]["containers"]
    (env,) = [e for e in driver["env"] if e["name"] == "CSI_MAX_VOLUME_SIZE"]
    return parse_size(env["value"])


DEFINITION_FILES = sorted(storage_suite.DEFINITIONS_DIR.glob("*.yaml"))


def test_every_definition_file_is_run() -> None:
    assert {p.stem for p in DEFINITION_FILES} == {d.name for d in storage_suite.DEFINITIONS}
    for selection in storage_suite.SELECTIONS.values():
        assert set(selection.definitions) <= {d.name for d in storage_suite.DEFINITIONS}
        assert set(selection.suites) <= set(selection.definitions)
        for suites in selection.suites.values():
            assert set(suites) <= set(storage_suite.SUITES)


@pytest.mark.parametrize("path", DEFINITION_FILES, ids=lambda p: p.stem)
def test_definition_keys_are_the_suites(path: Path) -> None:
    data = load(path)
    assert set(data) <= TOP_KEYS
    info = data["DriverInfo"]
    assert set(info) <= DRIVER_INFO_KEYS
    assert set(info["Capabilities"]) <= CAPABILITIES
    assert all(isinstance(v, bool) for v in info["Capabilities"].values())
    assert set(info["SupportedSizeRange"]) <= {"Min", "Max", "Step"}
    # Sets in Go (sets.String): maps of empty values, not lists.
    for key in ("SupportedFsType", "SupportedMountOption"):
        assert isinstance(info.get(key, {}), dict)
        assert all(v == {} for v in info.get(key, {}).values())
    for key in ("StorageClass", "SnapshotClass"):
        assert set(data.get(key, {})) <= CLASS_SOURCES
    for volume in data.get("InlineVolumes", []):
        assert set(volume) <= INLINE_KEYS


@pytest.mark.parametrize("path", DEFINITION_FILES, ids=lambda p: p.stem)
def test_definition_says_what_deploy_and_the_driver_do(path: Path) -> None:
    data = load(path)
    info = data["DriverInfo"]
    caps = info["Capabilities"]
    (csidriver,) = deploy_documents("base", "csidriver.yaml")
    assert info["Name"] == csidriver["metadata"]["name"]
    classes = {c["metadata"]["name"]: c for c in deploy_documents("base", "storageclasses.yaml")}
    storage_class = classes[data["StorageClass"]["FromExistingClassName"]]
    parameters = storage_class["parameters"]
    (snapshot_class,) = deploy_documents("snapshot", "volumesnapshotclass.yaml")
    assert data["SnapshotClass"]["FromExistingClassName"] == snapshot_class["metadata"]["name"]
    assert caps["controllerExpansion"] == storage_class["allowVolumeExpansion"]
    # The node's name is a volume's one topology segment.
    config = Config(driver_name=info["Name"], node_id="n", data_dir=Path("/x"), endpoint="")
    assert info["TopologyKeys"] == [config.topology_key]
    assert caps["topology"]
    assert caps["capacity"] == csidriver["spec"]["storageCapacity"]
    assert caps["fsGroup"] == (csidriver["spec"]["fsGroupPolicy"] == "File")
    args = driver_args()
    assert caps["volumeLimits"] == any(a.startswith("--max-volumes-per-node") for a in args)
    assert "--no-controller-expansion" in args
    assert caps["nodeExpansion"]
    # The size range starts at the driver's smallest volume of the class's kind.
    fs = parameters.get("csi.storage.k8s.io/fstype", "")
    minimum = parse_size(info["SupportedSizeRange"]["Min"])
    # ... and ends at the largest the e2e tier's driver accepts (deploy/overlays/kind-e2e).
    assert parse_size(info["SupportedSizeRange"]["Max"]) == cluster_max_volume_size()
    # Raw block claims: the loop device, whatever the class's filesystem; never a directory.
    assert caps["block"] == (parameters["volumeType"] == "loop")
    if parameters["volumeType"] == "directory":
        assert caps["FSResizeFromSourceNotSupported"]
        assert set(info["SupportedFsType"]) == {""}
    elif fs:
        assert minimum == MIN_FS_SIZE[fs]
        assert set(info["SupportedFsType"]) == {"", fs}
    else:
        assert set(info["SupportedFsType"]) == {""}
    for volume in data.get("InlineVolumes", []):
        attributes = volume["Attributes"]
        assert attributes["volumeType"] == parameters["volumeType"]
        assert attributes.get("fsType", "") == fs
        assert parse_size(attributes["size"]) >= minimum


def test_readme_lists_every_skip() -> None:
    readme = (Path(storage_suite.__file__).parent / "README.md").read_text()
    rows = set(re.findall(r"^\| ([^|]+?) \|", readme, re.M))
    for skip in storage_suite.SKIPS:
        assert skip.title in rows, f"tests/e2e/README.md has no row for {skip.title!r}"
        re.compile(skip.pattern)


# --- the suite itself ----------------------------------------------------------------------


def suite_namespaces(cluster: Cluster) -> list[str]:
    namespaces = cluster.core.list_namespace(label_selector=SUITE_LABEL).items
    return [n.metadata.name for n in namespaces]


@pytest.mark.e2e
@pytest.mark.parametrize("name", SELECTION.definitions)
def test_external_storage_suite(
    name: str,
    cluster: Cluster,
    storage_suite_runs: dict[str, Future[storage_suite.Outcome]],
    report: list[str],
) -> None:
    """Each definition's run, started beside the other e2e tests (tests/e2e/conftest.py).
    Once every run has ended, their namespaces (and so their volumes) go before the
    disruptive tests restart the driver and the node."""
    outcome = storage_suite_runs[name].result()
    if all(run.done() for run in storage_suite_runs.values()):
        wait_until("the suite's namespaces deleted", lambda: not suite_namespaces(cluster), 600)
    report.extend(f"storage suite {line}" for line in outcome.summary())
    log = outcome.log.read_text()[-6000:] if outcome.log else ""
    assert outcome.cases, f"no JUnit report; ginkgo exited {outcome.returncode}:\n{log}"
    assert not outcome.failed, "\n".join(storage_suite.explain([outcome]))
    assert outcome.returncode == 0, f"ginkgo exited {outcome.returncode}:\n{log}"
