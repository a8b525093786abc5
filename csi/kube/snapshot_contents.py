"""Assigns imported (pre-provisioned) VolumeSnapshotContents to the node that holds them.

The csi-snapshotter beside each driver runs with ``--node-deployment`` and only acts on
contents labelled ``snapshot.storage.kubernetes.io/managed-by=<its node>``. The snapshot
controller sets that label on the contents it makes for new snapshots (it knows the source
volume's node), but a content a user writes to import an existing snapshot (its
``spec.source.snapshotHandle`` set) carries no label, so no snapshotter would ever check
it and it would never become ready. Only the node's driver knows which snapshot handles
live on that node, so the driver watches the unlabelled contents of its own driver name
and labels the ones whose handle it holds; from then on the node's snapshotter handles
them like any other (readiness through ListSnapshots, DeleteSnapshot under the Delete
policy). A label already present is never changed, and contents that belong to a group
snapshot are left to the group's own life cycle.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from csi.kube.api import ApiError, Client, JsonObject, WatchExpired

log = logging.getLogger(__name__)

MANAGED_BY = "snapshot.storage.kubernetes.io/managed-by"
# Set by the snapshot controller on the per-volume contents of a group snapshot.
GROUP_HANDLE = "groupsnapshot.storage.k8s.io/volumeGroupSnapshotHandle"
CONTENTS = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents"
UNLABELLED = f"!{MANAGED_BY}"
WATCH_SECONDS = 300  # the server ends a watch after this; it is then resumed
MAX_BACKOFF = 30.0


def label_patch(
    content: Mapping[str, Any], driver: str, node: str, holds: Callable[[str], bool]
) -> JsonObject | None:
    """The merge patch assigning ``content`` to ``node``, or None when it is not ours to
    assign: another driver's, made from a volume (the snapshot controller labels those),
    already assigned, part of a group, or a snapshot this node does not hold."""
    spec = content.get("spec") or {}
    metadata = content.get("metadata") or {}
    if spec.get("driver") != driver:
        return None
    handle = (spec.get("source") or {}).get("snapshotHandle")
    if not isinstance(handle, str) or not handle:
        return None
    if MANAGED_BY in (metadata.get("labels") or {}):
        return None
    if GROUP_HANDLE in (metadata.get("annotations") or {}):
        return None
    if not holds(handle):
        return None
    return {"metadata": {"labels": {MANAGED_BY: node}}}


class ContentLabeller:
    """One thread: list the unlabelled contents, label ours, then watch for more."""

    def __init__(
        self, client: Client, driver: str, node: str, holds: Callable[[str], bool]
    ) -> None:
        self._client = client
        self._driver = driver
        self._node = node
        self._holds = holds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="snapshot-contents", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        # The watch's connection ends on its own (daemon thread); nothing waits on it.

    def sync(self) -> str:
        """Label every unlabelled content this node holds; the list's resource version."""
        listing = self._client.list(CONTENTS, labelSelector=UNLABELLED)
        for content in listing.get("items") or []:
            self._consider(content)
        return str((listing.get("metadata") or {}).get("resourceVersion") or "")

    def _run(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                # Listed afresh at the end of every watch: a content whose snapshot this
                # node came to hold later (a restored data root) is found within minutes.
                version = self.sync()
                backoff = 1.0
                self._watch(version)
            except WatchExpired:
                continue  # list afresh at once
            except ApiError as exc:
                if exc.status != 404:
                    backoff = self._retry(exc, backoff)
                    continue
                # No snapshot CRDs in this cluster (yet): nothing to assign.
                log.info("event=snapshot_contents_absent retry_s=%d", WATCH_SECONDS)
                self._stopping.wait(WATCH_SECONDS)
            except ValueError as exc:  # a reply that is not JSON
                backoff = self._retry(exc, backoff)

    def _retry(self, exc: Exception, backoff: float) -> float:
        log.warning("event=snapshot_contents_retry error=%r backoff_s=%.0f", exc, backoff)
        self._stopping.wait(backoff)
        return min(backoff * 2, MAX_BACKOFF)

    def _watch(self, version: str) -> None:
        events = self._client.watch(CONTENTS, version, WATCH_SECONDS, labelSelector=UNLABELLED)
        for event in events:
            if self._stopping.is_set():
                return
            if event.type in ("ADDED", "MODIFIED"):
                self._consider(event.object)

    def _consider(self, content: JsonObject) -> None:
        patch = label_patch(content, self._driver, self._node, self._holds)
        if patch is None:
            return
        name = str((content.get("metadata") or {}).get("name") or "")
        try:
            self._client.patch_merge(f"{CONTENTS}/{name}", patch)
        except ApiError as exc:
            if exc.status == 404:
                return  # deleted meanwhile
            raise
        handle = content["spec"]["source"]["snapshotHandle"]
        log.info("event=snapshot_content_assigned content=%s snapshot=%s", name, handle)
