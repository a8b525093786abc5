"""The Helm chart in the kind cluster: `helm install` takes over the driver that
deploy/overlays/kind-e2e put there (the chart with ci/kind-e2e-values.yaml renders the very
same objects, which tests/manifests checks offline), the node pods are not rolled, and the
README's first example runs through it; `localvol-csi inspect` in the driver container and
its /metrics then show that example's volume. Afterwards the release is forgotten (its
record removed, the objects kept), so the other e2e tests find the cluster as before."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.cluster import DRIVER_NAMESPACE, Cluster
from tests.e2e.test_examples import readme_first_example
from tests.manifests.helm import CHART, helm_binary, values_file

pytestmark = pytest.mark.e2e
RELEASE = "localvol-csi"
DAEMONSET = "localvol-csi-node"


def helm(cluster: Cluster, *args: str) -> str:
    proc = subprocess.run(
        [helm_binary(), *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(cluster: Cluster) -> Iterator[Cluster]:
    before = cluster.apps.read_namespaced_daemon_set(DAEMONSET, DRIVER_NAMESPACE)
    helm(
        cluster,
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        DRIVER_NAMESPACE,
        "-f",
        str(values_file("kind-e2e")),
        # The objects exist (applied with kubectl): the release adopts them as they are,
        # and takes over the fields kubectl's client-side apply manages (Helm 4 applies on
        # the server; the values are the same, so nothing changes but the field manager).
        "--take-ownership",
        "--force-conflicts",
        "--wait",
        "--timeout",
        "5m",
    )
    try:
        after = cluster.apps.read_namespaced_daemon_set(DAEMONSET, DRIVER_NAMESPACE)
        # Same objects: the pod template did not change, so no node pod was replaced.
        assert after.metadata.generation == before.metadata.generation
        assert after.metadata.annotations["meta.helm.sh/release-name"] == RELEASE
        yield cluster
    finally:
        # Forget the release without deleting what it owns: remove only Helm's record.
        cluster.kubectl(
            "delete",
            "secret",
            "-n",
            DRIVER_NAMESPACE,
            "-l",
            f"owner=helm,name={RELEASE}",
            "--ignore-not-found",
        )


def test_helm_install_serves_the_readme_example(installed: Cluster, ns: str) -> None:
    cluster = installed
    status = json.loads(helm(cluster, "status", RELEASE, "-n", DRIVER_NAMESPACE, "-o", "json"))
    assert status["info"]["status"] == "deployed"
    cluster.apply(ns, readme_first_example())
    cluster.wait_ready(ns, "my-app")
    assert cluster.exec(ns, "my-app", "cat /data/hello.txt") == "hello\n"
    volume_id = cluster.volume_handle(ns, "my-data")

    # The node, asked what it holds: the example's volume, staged, published and healthy.
    driver = cluster.wait_driver_ready(cluster.volume_node(ns, "my-data"))
    report = json.loads(
        cluster.kubectl(
            "exec", "-n", DRIVER_NAMESPACE, driver, "-c", "driver", "--",
            "localvol-csi", "inspect", "--output", "json",
        )
    )  # fmt: skip
    (volume,) = [v for v in report["volumes"] if v["volume_id"] == volume_id]
    assert volume["kind"] == "loop-filesystem"
    assert volume["staging_path"]
    assert len(volume["targets"]) == 1
    assert len(volume["loop_devices"]) == 1
    assert volume["healthy"], volume["health"]

    # And its metrics, where the pod annotations point a scraper.
    script = (
        "import urllib.request; "
        "print(urllib.request.urlopen('http://127.0.0.1:9808/metrics', timeout=10).read().decode())"
    )
    text = cluster.kubectl(
        "exec", "-n", DRIVER_NAMESPACE, driver, "-c", "driver", "--", "python3", "-c", script
    )
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    published = ("localvol_rpc_requests_total", (("code", "OK"), ("method", "NodePublishVolume")))
    assert samples.get(published, 0) >= 1, "no successful NodePublishVolume counted"
    ready = ("localvol_volumes", (("kind", "loop-filesystem"), ("phase", "ready")))
    assert samples.get(ready, 0) >= 1, "the example's volume is not counted"
    assert volume_id not in text
