"""The node pod registers the driver and probes it through the driver's own flags, paths and
ports, one consistent set: the registry and the socket's host path are what the mounts make
of the driver's paths, the probes reach the port it serves /healthz on. The upstream-sidecars
component turns that back into node-driver-registrar and livenessprobe, driver flags off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from csi.cli import config_from_args
from csi.config import Config
from csi.endpoints import grpc_address
from csi.health import CHECK_TIMEOUT
from tests.manifests.support import UPSTREAM_SIDECARS, build, describe, validate

OVERLAYS = ["deploy/overlays/kind", "deploy/overlays/multinode"]
REGISTRY = Path("/var/lib/kubelet/plugins_registry")
DRIVER_FLAGS = ("--plugin-registration-dir=", "--kubelet-registration-path=", "--health-address=")
SIDECARS = ("node-driver-registrar", "livenessprobe")
Obj = dict[str, Any]


@pytest.fixture(autouse=True)
def _no_driver_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the manifest's arguments count, not this machine's CSI_* variables."""
    for name in ("CSI_PLUGIN_REGISTRATION_DIR", "CSI_KUBELET_REGISTRATION_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CSI_HEALTH_ADDRESS", raising=False)


def node_pod(directory: str) -> Obj:
    daemonset = next(o for o in build(directory) if o["kind"] == "DaemonSet")
    pod: Obj = daemonset["spec"]["template"]["spec"]
    return pod


def container(pod: Obj, name: str) -> Obj:
    found = [c for c in pod["containers"] if c["name"] == name]
    assert len(found) == 1, f"{len(found)} containers named {name}"
    return found[0]


def driver_config(driver: Obj) -> Config:
    return config_from_args([a.replace("$(CSI_NODE_ID)", "node-1") for a in driver["args"]])


def host_path(pod: Obj, owner: Obj, path: Path) -> Path:
    """Where ``path`` inside ``owner`` is on the node, through its hostPath mounts."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in sorted(owner["volumeMounts"], key=lambda m: -len(m["mountPath"])):
        inside = Path(mount["mountPath"])
        if path == inside or inside in path.parents:
            source = volumes[mount["name"]].get("hostPath")
            assert source, f"{mount['name']} is not a hostPath volume"
            return Path(source["path"]) / path.relative_to(inside)
    raise AssertionError(f"{path} is on no mount of {owner['name']}")


def port_number(owner: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = {p["name"]: p["containerPort"] for p in owner.get("ports", [])}
    assert port in numbers, f"{owner['name']} has no port named {port}"
    return int(numbers[port])


def socket_on_host(pod: Obj, driver: Obj, config: Config) -> Path:
    _, socket_path = grpc_address(config.endpoint)
    assert socket_path is not None, "the node plugin serves on a unix socket"
    return host_path(pod, driver, socket_path)


@pytest.mark.parametrize("directory", OVERLAYS)
def test_the_driver_registers_itself(directory: str) -> None:
    pod = node_pod(directory)
    names = [c["name"] for c in pod["containers"]]
    assert not set(SIDECARS) & set(names), names
    driver = container(pod, "driver")
    config = driver_config(driver)
    assert config.plugin_registration_dir is not None, "registration is off"
    assert host_path(pod, driver, config.plugin_registration_dir) == REGISTRY
    assert config.kubelet_registration_path == socket_on_host(pod, driver, config)


@pytest.mark.parametrize("directory", OVERLAYS)
def test_probes_reach_the_drivers_health_endpoint(directory: str) -> None:
    driver = container(node_pod(directory), "driver")
    config = driver_config(driver)
    assert config.health_address is not None, "--health-address is off"
    for kind in ("startupProbe", "livenessProbe"):
        probe = driver[kind]
        assert probe["httpGet"]["path"] == "/healthz", kind
        assert port_number(driver, probe["httpGet"]["port"]) == config.health_address.port, kind
        # The endpoint answers within its check timeout; the kubelet must wait longer.
        assert probe["timeoutSeconds"] > CHECK_TIMEOUT, kind


def test_upstream_sidecars_component_builds_valid_objects() -> None:
    objects = build(UPSTREAM_SIDECARS)
    assert objects
    for obj in objects:
        try:
            validate(obj)
        except Exception as exc:
            pytest.fail(f"{UPSTREAM_SIDECARS}: {describe(obj)} is invalid: {str(exc)[:600]}")


def test_upstream_sidecars_component_turns_the_drivers_own_off() -> None:
    pod = node_pod(UPSTREAM_SIDECARS)
    driver = container(pod, "driver")
    config = driver_config(driver)
    assert config.plugin_registration_dir is None
    assert config.kubelet_registration_path is None
    assert config.health_address is None
    # Exactly the three flags go; every other argument stays as the overlay has it.
    plain = container(node_pod("deploy/overlays/multinode"), "driver")["args"]
    assert driver["args"] == [a for a in plain if not a.startswith(DRIVER_FLAGS)]
    assert len(driver["args"]) == len(plain) - len(DRIVER_FLAGS)


def test_upstream_sidecars_register_and_probe_the_same_paths() -> None:
    pod = node_pod(UPSTREAM_SIDECARS)
    driver = container(pod, "driver")
    registrar = container(pod, "node-driver-registrar")
    flags = dict(a.split("=", 1) for a in registrar["args"] if "=" in a)
    assert Path(flags["--kubelet-registration-path"]) == socket_on_host(
        pod, driver, driver_config(driver)
    )
    assert host_path(pod, registrar, Path("/registration")) == REGISTRY
    liveness = container(pod, "livenessprobe")
    endpoint = next(a for a in liveness["args"] if a.startswith("--http-endpoint="))
    port = int(endpoint.rpartition(":")[2])
    assert port == port_number(driver, driver["livenessProbe"]["httpGet"]["port"])
    for sidecar in (registrar, liveness):
        assert sidecar["image"].rpartition(":")[2].startswith("v"), sidecar["image"]
