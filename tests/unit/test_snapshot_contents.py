"""Imported VolumeSnapshotContents are assigned to the node holding their snapshot."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from csi.kube.api import ApiError, Client, Endpoint
from csi.kube.snapshot_contents import (
    CONTENTS,
    GROUP_HANDLE,
    MANAGED_BY,
    ContentLabeller,
    label_patch,
)

DRIVER = "localvol.csi.dev"
NODE = "node-a"
HELD = {"snap-held", "snap-later"}


def content(
    name: str,
    handle: str | None = None,
    *,
    driver: str = DRIVER,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    source = {"snapshotHandle": handle} if handle else {"volumeHandle": "vol-1"}
    return {
        "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        "spec": {"driver": driver, "source": source, "deletionPolicy": "Retain"},
    }


@pytest.mark.parametrize(
    ("obj", "why"),
    [
        (content("a", "snap-held", driver="other.csi.dev"), "another driver's"),
        (content("b"), "made from a volume: the snapshot controller labels it"),
        (content("c", "snap-held", labels={MANAGED_BY: "node-b"}), "already assigned"),
        (content("d", "snap-held", annotations={GROUP_HANDLE: "group-1"}), "a group member"),
        (content("e", "snap-elsewhere"), "a snapshot this node does not hold"),
    ],
)
def test_contents_not_ours_to_assign_are_left_alone(obj: dict[str, Any], why: str) -> None:
    assert label_patch(obj, DRIVER, NODE, HELD.__contains__) is None, why


def test_an_imported_content_we_hold_is_labelled_with_the_node() -> None:
    patch = label_patch(content("f", "snap-held"), DRIVER, NODE, HELD.__contains__)
    assert patch == {"metadata": {"labels": {MANAGED_BY: NODE}}}


class FakeApi:
    """Just enough of the API server: list, watch (events fed by the test), merge patch."""

    def __init__(self, token_path: Path) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 1
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.tokens: list[str] = []
        self.patches: list[str] = []
        self.lists = 0
        self.token_path = token_path
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                api.tokens.append(self.headers.get("Authorization", ""))
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                assert url.path == CONTENTS
                assert query["labelSelector"] == [f"!{MANAGED_BY}"]
                if "watch" in query:
                    self._stream()
                    return
                api.lists += 1
                items = [
                    o for o in api.objects.values() if MANAGED_BY not in o["metadata"]["labels"]
                ]
                self._reply(
                    200, {"metadata": {"resourceVersion": str(api.version)}, "items": items}
                )

            def do_PATCH(self) -> None:
                api.tokens.append(self.headers.get("Authorization", ""))
                assert self.headers["Content-Type"] == "application/merge-patch+json"
                name = urlsplit(self.path).path.rsplit("/", 1)[1]
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if name not in api.objects:
                    self._reply(404, {"message": "not found"})
                    return
                api.objects[name]["metadata"]["labels"].update(body["metadata"]["labels"])
                api.patches.append(name)
                self._reply(200, api.objects[name])

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                while True:
                    event = api.events.get()
                    if event is None:
                        return
                    self.wfile.write(json.dumps(event).encode() + b"\n")
                    self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def client(self) -> Client:
        host, port = self.server.server_address[:2]
        return Client(Endpoint(f"http://{host}:{port}", token_path=self.token_path))

    def add(self, obj: dict[str, Any]) -> None:
        self.objects[obj["metadata"]["name"]] = obj
        self.version += 1
        self.events.put({"type": "ADDED", "object": obj})

    def close(self) -> None:
        for _ in range(4):
            self.events.put(None)
        self.server.shutdown()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeApi]:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    fake = FakeApi(token)
    yield fake
    fake.close()


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_first_list_labels_only_what_this_node_holds(api: FakeApi) -> None:
    for obj in (
        content("held", "snap-held"),
        content("elsewhere", "snap-elsewhere"),
        content("dynamic"),
        content("foreign", "snap-held", driver="other.csi.dev"),
    ):
        api.objects[obj["metadata"]["name"]] = obj
    labeller = ContentLabeller(api.client, DRIVER, NODE, HELD.__contains__)
    assert labeller.sync() == str(api.version)
    assert api.patches == ["held"]
    assert api.objects["held"]["metadata"]["labels"] == {MANAGED_BY: NODE}
    assert set(api.tokens) == {"Bearer first-token"}


def test_contents_imported_later_are_labelled_from_the_watch(api: FakeApi) -> None:
    labeller = ContentLabeller(api.client, DRIVER, NODE, HELD.__contains__)
    labeller.start()
    try:
        wait_for(lambda: api.lists == 1)
        api.token_path.write_text("rotated-token")  # the kubelet rotates it in place
        api.add(content("other-node", "snap-elsewhere"))
        api.add(content("imported", "snap-later"))
        wait_for(lambda: api.patches == ["imported"])
        assert api.objects["other-node"]["metadata"]["labels"] == {}
        assert api.tokens[-1] == "Bearer rotated-token"
    finally:
        labeller.stop()


def test_an_expired_watch_lists_again(api: FakeApi) -> None:
    labeller = ContentLabeller(api.client, DRIVER, NODE, HELD.__contains__)
    labeller.start()
    try:
        wait_for(lambda: api.lists == 1)
        api.objects["missed"] = content("missed", "snap-held")  # no event for it
        api.events.put({"type": "ERROR", "object": {"code": 410, "message": "too old"}})
        wait_for(lambda: api.patches == ["missed"])
        assert api.lists == 2
    finally:
        labeller.stop()


def test_refusals_carry_the_servers_message(api: FakeApi, tmp_path: Path) -> None:
    with pytest.raises(ApiError) as refused:
        api.client.patch_merge(f"{CONTENTS}/absent", {"metadata": {"labels": {}}})
    assert refused.value.status == 404
    assert "not found" in str(refused.value)


def test_in_cluster_needs_the_service_environment() -> None:
    with pytest.raises(ApiError, match="KUBERNETES_SERVICE_HOST"):
        Endpoint.in_cluster({})
    endpoint = Endpoint.in_cluster(
        {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    )
    assert endpoint.url == "https://[fd00::1]:6443"
