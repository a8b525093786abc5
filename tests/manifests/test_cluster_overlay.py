"""deploy/overlays/cluster (the test cluster of hack/cluster-up) is deploy/ as it is: it
changes the driver's image tag and pull policy, the data root's host path and the largest
volume (below the node's free space), nothing else."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tests.e2e.cluster import NODE_DATA
from tests.manifests.support import ROOT, build, describe


def by_name(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {describe(o): o for o in objects}


def test_cluster_overlay_changes_only_what_one_node_needs() -> None:
    plain = by_name(build("deploy/base") + build("deploy/snapshot"))
    cluster = by_name(build("deploy/overlays/cluster"))
    assert cluster.keys() == plain.keys()
    for name, obj in cluster.items():
        if obj["kind"] != "DaemonSet":
            assert obj == plain[name], f"{name} differs from deploy/"
            continue
        expected = copy.deepcopy(plain[name])
        pod = expected["spec"]["template"]["spec"]
        driver = next(c for c in pod["containers"] if c["name"] == "driver")
        driver["image"] = "localvol-csi:dev"
        driver["imagePullPolicy"] = "IfNotPresent"
        # A strategic-merge patch puts the entries it adds first.
        driver["env"].insert(0, {"name": "CSI_MAX_VOLUME_SIZE", "value": "8Gi"})
        data = next(v for v in pod["volumes"] if v["name"] == "data-dir")
        data["hostPath"]["path"] = "/var/lib/localvol-cluster/data"
        # A strategic-merge patch may reorder the volumes list; the order means nothing.
        for o in (obj, expected):
            o["spec"]["template"]["spec"]["volumes"].sort(key=lambda v: v["name"])
        assert obj == expected


def test_cluster_data_root_is_where_the_cluster_scripts_expect() -> None:
    daemonset = next(o for o in build("deploy/overlays/cluster") if o["kind"] == "DaemonSet")
    volumes = daemonset["spec"]["template"]["spec"]["volumes"]
    data = next(v for v in volumes if v["name"] == "data-dir")
    assert Path(data["hostPath"]["path"]) == NODE_DATA
    assert (
        'SHARED_DIRS=(/var/lib/kubelet "$CLUSTER_DIR/data")'
        in (ROOT / "hack" / "cluster-lib.sh").read_text()
    )
