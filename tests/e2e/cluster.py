"""The kind cluster as the e2e tests use it: the Kubernetes API through the ``kubernetes``
client, ``kubectl`` for what a user types (apply, exec), and each node's data root as this
machine sees it (the nodes are containers on it)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from csi.units import parse_size

REPO = Path(__file__).resolve().parents[2]
# hack/lib.sh's GOBIN: every Go program the tests run (kubectl, e2e.test, ginkgo...).
GO_BIN = Path(os.environ.get("GOBIN", "/var/cache/localvol-csi/go-bin"))
KUBECTL = GO_BIN / "kubectl"
DRIVER_NAMESPACE = "localvol-csi"
E2E_LABEL = "e2e.localvol.csi.dev/test"
TIMEOUT = 180.0


class ClusterError(AssertionError):
    pass


def wait_until(
    what: str, check: Callable[[], Any], timeout: float = TIMEOUT, poll: float = 0.25
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(poll)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@dataclass
class Cluster:
    """A cluster through one kubeconfig and, where it holds several, one of its contexts
    (kind's ``kind-localvol``); ``data_roots`` maps each node's name to its data root as
    this machine sees it."""

    kubeconfig: Path
    context: str | None = None
    data_roots: dict[str, Path] = field(default_factory=dict)
    core: client.CoreV1Api = field(init=False)
    apps: client.AppsV1Api = field(init=False)
    custom: client.CustomObjectsApi = field(init=False)

    def __post_init__(self) -> None:
        api = config.new_client_from_config(config_file=str(self.kubeconfig), context=self.context)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    @property
    def env(self) -> dict[str, str]:
        """The environment a user of this cluster has: its kubectl first, its kubeconfig."""
        return dict(
            os.environ,
            KUBECONFIG=str(self.kubeconfig),
            PATH=f"{KUBECTL.parent}:{os.environ['PATH']}",
        )

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        context = ("--context", self.context) if self.context else ()
        proc = subprocess.run(
            [str(KUBECTL), *context, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=TIMEOUT,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def apply(self, namespace: str, *documents: dict[str, Any] | str) -> None:
        text = "\n---\n".join(d if isinstance(d, str) else yaml.safe_dump(d) for d in documents)
        self.kubectl("apply", "-n", namespace, "-f", "-", stdin=text)

    def delete(self, namespace: str, kind: str, name: str) -> None:
        self.kubectl("delete", "-n", namespace, kind, name, "--ignore-not-found", "--wait=true")

    def exec(self, namespace: str, pod: str, script: str, check: bool = True) -> str:
        return self.kubectl("exec", "-n", namespace, pod, "--", "sh", "-c", script, check=check)

    def new_namespace(self) -> str:
        """A namespace of a test's own, labelled so the last test can wait for it to go."""
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        self.kubectl("label", "namespace", name, f"{E2E_LABEL}=true")
        return name

    def delete_namespace(self, name: str) -> None:
        """Deleted with everything in it; not waited for (its volumes go meanwhile)."""
        self.kubectl("delete", "namespace", name, "--wait=false")

    def pod_ready(self, namespace: str, name: str) -> bool:
        pod = self.core.read_namespaced_pod(name, namespace)
        if pod.status.phase == "Failed":
            raise ClusterError(f"pod {namespace}/{name} failed: {pod.status}")
        conditions = pod.status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    def wait_ready(self, namespace: str, *names: str, timeout: float = TIMEOUT) -> None:
        for name in names:
            wait_until(
                f"pod {namespace}/{name} Ready",
                lambda name=name: self._ready_or_none(namespace, name),
                timeout,
            )

    def _ready_or_none(self, namespace: str, name: str) -> bool:
        try:
            return self.pod_ready(namespace, name)
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def wait_started_since(
        self, namespace: str, names: tuple[str, ...], since: datetime, timeout: float = TIMEOUT
    ) -> None:
        """Wait until each pod is Ready with containers started at or after ``since`` (a
        pod the API still shows Ready from before a node reboot does not count)."""

        def restarted(name: str) -> bool:
            if not self._ready_or_none(namespace, name):
                return False
            statuses = self.core.read_namespaced_pod(name, namespace).status.container_statuses
            started = [s.state.running.started_at for s in statuses or [] if s.state.running]
            floor = since.replace(microsecond=0)
            return bool(started) and all(t >= floor for t in started)

        for name in names:
            wait_until(
                f"pod {namespace}/{name} started again", lambda n=name: restarted(n), timeout
            )

    def wait_gone(self, namespace: str, name: str, timeout: float = TIMEOUT) -> None:
        def gone() -> bool:
            try:
                self.core.read_namespaced_pod(name, namespace)
            except client.ApiException as exc:
                return exc.status == 404
            return False

        wait_until(f"pod {namespace}/{name} deleted", gone, timeout)

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete as a user does (gracefully): the pod leaves the API once the kubelet has
        stopped it and unpublished its volumes."""
        self.core.delete_namespaced_pod(name, namespace)
        self.wait_gone(namespace, name)

    def claim(self, namespace: str, name: str) -> Any:
        return self.core.read_namespaced_persistent_volume_claim(name, namespace)

    def volume_handle(self, namespace: str, claim: str) -> str:
        pv = self.core.read_persistent_volume(self.claim(namespace, claim).spec.volume_name)
        return str(pv.spec.csi.volume_handle)

    def volume_node(self, namespace: str, claim: str) -> str:
        """The node a bound claim's volume is on (its PV's node affinity)."""
        pv = self.core.read_persistent_volume(self.claim(namespace, claim).spec.volume_name)
        (term,) = pv.spec.node_affinity.required.node_selector_terms
        (expression,) = term.match_expressions
        (node,) = expression.values
        return str(node)

    def data_root_of(self, namespace: str, claim: str) -> Path:
        """The data root, as this machine sees it, of the node a bound claim's volume is on."""
        return self.data_roots[self.volume_node(namespace, claim)]

    def image_of(self, namespace: str, claim: str) -> Path:
        """A bound loop volume's image file, as this machine sees it."""
        handle = self.volume_handle(namespace, claim)
        return self.data_root_of(namespace, claim) / "images" / f"{handle}.img"

    def published_capacity(self, storage_class_name: str) -> int:
        """The class's CSIStorageCapacity on the node, in bytes (0 while none is published)."""
        items = (
            client.StorageV1Api(self.core.api_client)
            .list_namespaced_csi_storage_capacity(DRIVER_NAMESPACE)
            .items
        )
        found = [c for c in items if c.storage_class_name == storage_class_name and c.capacity]
        return max((parse_size(str(c.capacity)) for c in found), default=0)

    def driver_pod(self, node: str) -> str:
        """The driver's pod on ``node`` (the DaemonSet's one pod there)."""
        pods = self.core.list_namespaced_pod(
            DRIVER_NAMESPACE,
            label_selector="app.kubernetes.io/name=localvol-csi-node",
            field_selector=f"spec.nodeName={node}",
        ).items
        running = [p for p in pods if p.metadata.deletion_timestamp is None]
        if len(running) != 1:
            names = [p.metadata.name for p in pods]
            raise ClusterError(f"expected one driver pod on {node}, found {names}")
        return str(running[0].metadata.name)

    def wait_driver_ready(self, node: str) -> str:
        def ready() -> str:
            try:
                name = self.driver_pod(node)
            except ClusterError:
                return ""
            return name if self.pod_ready(DRIVER_NAMESPACE, name) else ""

        name: str = wait_until(f"the driver pod on {node} Ready", ready)
        return name


# --- objects, written as a user writes them ------------------------------------------------


DRIVER = "localvol.csi.dev"
PARAMETER_PREFIX = "csi.storage.k8s.io"


def on_node(document: dict[str, Any], node: str) -> dict[str, Any]:
    """A pod (or a pod template's spec holder) pinned to ``node``."""
    document["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    return document


def storage_class(name: str, parameters: dict[str, str], **extra: Any) -> dict[str, Any]:
    """A class of this driver, bound when its first pod is scheduled (as deploy/'s), labelled
    as the e2e tests' own."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name, "labels": {E2E_LABEL: "true"}},
        "provisioner": DRIVER,
        "parameters": parameters,
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
        **extra,
    }


def secret_parameters(ns: str, provisioner: str, node_stage: str) -> dict[str, str]:
    """A class's parameters naming the Secrets CreateVolume and NodeStageVolume get."""
    return {
        f"{PARAMETER_PREFIX}/provisioner-secret-name": provisioner,
        f"{PARAMETER_PREFIX}/provisioner-secret-namespace": ns,
        f"{PARAMETER_PREFIX}/node-stage-secret-name": node_stage,
        f"{PARAMETER_PREFIX}/node-stage-secret-namespace": ns,
    }


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def snapshot(name: str, claim_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name},
        "spec": {
            "volumeSnapshotClassName": "localvol-snapshots",
            "source": {"persistentVolumeClaimName": claim_name},
        },
    }


def claim(name: str, storage_class: str, size: str = "1Gi", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "storageClassName": storage_class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
            **spec,
        },
    }


def pod(
    name: str,
    script: str = "exec sleep 2147483647",
    claims: dict[str, str] | None = None,
    read_only: tuple[str, ...] = (),
    devices: dict[str, str] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A busybox pod; ``claims`` maps mount paths to claim names, ``devices`` maps device
    paths to claim names (raw block)."""
    claims = claims or {}
    devices = devices or {}
    all_volumes = list(volumes or [])
    volume_mounts = list(mounts or [])
    volume_devices = []
    for index, (path, claim_name) in enumerate({**claims, **devices}.items()):
        volume = f"v{index}"
        source = {"claimName": claim_name, "readOnly": path in read_only}
        all_volumes.append({"name": volume, "persistentVolumeClaim": source})
        if path in devices:
            volume_devices.append({"name": volume, "devicePath": path})
        else:
            volume_mounts.append({"name": volume, "mountPath": path, "readOnly": path in read_only})
    container: dict[str, Any] = {
        "name": "app",
        "image": "busybox:1.36",
        "command": ["sh", "-c", script],
        "volumeMounts": volume_mounts,
    }
    if volume_devices:
        container["volumeDevices"] = volume_devices
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
            "volumes": all_volumes,
        },
    }
