"""Scraping: the DaemonSet's annotations and deploy/monitoring's PodMonitor point at the port
and path where the driver serves /metrics, and the PodMonitor matches its CRD's schema."""

from __future__ import annotations

import pytest

from csi.cli import build_parser
from tests.manifests.support import DEPLOY, UPSTREAM_SIDECARS, build, load_file, validate

PODMONITOR = DEPLOY / "monitoring" / "podmonitor.yaml"


def node_daemonset(directory: str = "deploy/overlays/multinode") -> dict:  # type: ignore[type-arg]
    return next(o for o in build(directory) if o["kind"] == "DaemonSet")


def test_pod_monitor_matches_its_crd_schema() -> None:
    for obj in load_file(PODMONITOR):
        validate(obj)
    (monitor,) = load_file(PODMONITOR)
    broken = {**monitor, "spec": {**monitor["spec"], "podMetricsEndpoint": []}}
    with pytest.raises(Exception, match="podMetricsEndpoint"):
        validate(broken)


def test_scrape_targets_are_the_driver_metrics() -> None:
    daemonset = node_daemonset()
    template = daemonset["spec"]["template"]
    driver = template["spec"]["containers"][0]
    assert driver["name"] == "driver"
    args = build_parser().parse_args([a.replace("$(CSI_NODE_ID)", "n") for a in driver["args"]])
    port = args.health_address.port
    ports = {p["name"]: p["containerPort"] for p in driver["ports"]}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == port
    (monitor,) = load_file(PODMONITOR)
    assert monitor["metadata"]["namespace"] == daemonset["metadata"]["namespace"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    assert ports[endpoint["port"]] == port


def test_no_scrape_annotations_without_the_drivers_listener() -> None:
    """With the upstream sidecars the driver serves no HTTP: nothing to scrape there."""
    template = node_daemonset(UPSTREAM_SIDECARS)["spec"]["template"]
    assert "annotations" not in template["metadata"]
    assert not any(
        a.startswith("--health-address") for a in template["spec"]["containers"][2]["args"]
    )
