"""Which node holds a clone's or a restore's source, as the Kubernetes API records it, and
moving the claim there.

Each node's driver makes volumes on its own node only, and a clone or a restore only from a
source it holds. The scheduler places a claim's pod without knowing where the claim's
source is, so the provisioner beside a node's driver may ask it for a copy of a source that
lives on another node. The driver then finds that node (a source volume's PersistentVolume
pins it there by node affinity on the driver's topology key; a source snapshot's
VolumeSnapshotContent carries it in the label the node-local snapshotters go by) and points
the claim's ``volume.kubernetes.io/selected-node`` annotation at it, only if it still names
this node. The scheduler then sees the pod's first try fail, and from then on considers no
other node for that claim; the provisioner of that node makes the copy there.

Asked only on that error path, never while a lock is held; an API that cannot answer means
"unknown" (or "not moved"), and the caller says what it can without it.
"""

from __future__ import annotations

import logging

from csi.kube.api import ApiError, Client, JsonObject
from csi.kube.snapshot_contents import MANAGED_BY

log = logging.getLogger(__name__)

VOLUMES = "/api/v1/persistentvolumes"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
CONTENTS = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents"
PAGE_SIZE = "500"


def volume_node(pv: JsonObject, driver: str, handle: str, topology_key: str) -> str | None:
    """The node a PersistentVolume of ``driver`` with ``handle`` is pinned to, if it is one."""
    csi = (pv.get("spec") or {}).get("csi") or {}
    if csi.get("driver") != driver or csi.get("volumeHandle") != handle:
        return None
    required = ((pv["spec"].get("nodeAffinity") or {}).get("required")) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for expression in term.get("matchExpressions") or []:
            values = expression.get("values") or []
            if expression.get("key") == topology_key and len(values) == 1:
                return str(values[0])
    return None


def snapshot_node(content: JsonObject, driver: str, handle: str) -> str | None:
    """The node a VolumeSnapshotContent of ``driver`` for snapshot ``handle`` belongs to."""
    spec, status = content.get("spec") or {}, content.get("status") or {}
    source = spec.get("source") or {}
    if spec.get("driver") != driver:
        return None
    if handle not in (status.get("snapshotHandle"), source.get("snapshotHandle")):
        return None
    node = ((content.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY)
    return str(node) if node else None


def move_patch(here: str, there: str) -> list[JsonObject]:
    """The selected node changed from ``here`` to ``there``, and only from ``here``."""
    path = "/metadata/annotations/" + SELECTED_NODE.replace("~", "~0").replace("/", "~1")
    return [
        {"op": "test", "path": path, "value": here},
        {"op": "replace", "path": path, "value": there},
    ]


class SourceNodes:
    """Looks a source up in the API, page by page, until one object names its node; moves
    a claim to that node."""

    def __init__(self, api: Client, driver: str, topology_key: str) -> None:
        self._api = api
        self._driver = driver
        self._topology_key = topology_key

    def node_of(self, kind: str, source_id: str) -> str | None:
        """The node holding source ``kind`` ("volume" or "snapshot") ``source_id``; None
        when no object names one or the API cannot be asked."""
        if kind == "volume":
            path = VOLUMES

            def match(obj: JsonObject) -> str | None:
                return volume_node(obj, self._driver, source_id, self._topology_key)

        else:
            path = CONTENTS

            def match(obj: JsonObject) -> str | None:
                return snapshot_node(obj, self._driver, source_id)

        token = ""
        try:
            while True:
                query = {"limit": PAGE_SIZE, **({"continue": token} if token else {})}
                page = self._api.list(path, **query)
                for obj in page.get("items") or []:
                    node = match(obj)
                    if node:
                        return node
                token = str((page.get("metadata") or {}).get("continue") or "")
                if not token:
                    return None
        except ApiError as exc:
            log.warning("event=source_lookup_failed kind=%s id=%s error=%s", kind, source_id, exc)
            return None

    def move_claim(self, namespace: str, name: str, here: str, there: str) -> bool:
        """Point claim ``namespace/name`` at node ``there`` if it is still on ``here``;
        whether it was."""
        path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
        try:
            self._api.patch_json(path, move_patch(here, there))
        except ApiError as exc:
            log.warning(
                "event=claim_not_moved claim=%s/%s to=%s error=%s", namespace, name, there, exc
            )
            return False
        log.info("event=claim_moved claim=%s/%s from=%s to=%s", namespace, name, here, there)
        return True
