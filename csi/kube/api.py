"""A minimal client of the Kubernetes API for a driver running in a pod.

The driver needs three verbs on one resource (list, watch, merge-patch of
VolumeSnapshotContents), so it speaks HTTP to the API server with the standard library
rather than carrying the ``kubernetes`` client's closure into its image. In a pod the
server, its CA and the pod's service-account token come from the usual places; the token
is read afresh for every request, since the kubelet rotates it in place.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUEST_TIMEOUT = 30.0

JsonObject = dict[str, Any]
JsonPatch = list[JsonObject]


class ApiError(Exception):
    """The API server refused a request, or could not be reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class WatchExpired(ApiError):
    """The watch's resource version is too old (410 Gone): list again."""


@dataclass(frozen=True)
class Endpoint:
    """Where the API server is and how to prove who we are."""

    url: str  # https://host:port, or http:// for a test server
    token_path: Path | None = None
    ca_path: Path | None = None

    @classmethod
    def in_cluster(cls, environ: Mapping[str, str] | None = None) -> Endpoint:
        env = os.environ if environ is None else environ
        host = env.get("KUBERNETES_SERVICE_HOST")
        port = env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ApiError("not in a pod: KUBERNETES_SERVICE_HOST is not set")
        if ":" in host:
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", SERVICE_ACCOUNT / "token", SERVICE_ACCOUNT / "ca.crt")


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: JsonObject


class Client:
    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        parts = urlsplit(endpoint.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ApiError(f"unusable API server address {endpoint.url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._tls: ssl.SSLContext | None = None
        if self._https:
            cafile = str(endpoint.ca_path) if endpoint.ca_path is not None else None
            self._tls = ssl.create_default_context(cafile=cafile)

    def list(self, path: str, **query: str) -> JsonObject:
        return self._json("GET", path, query)

    def patch_merge(self, path: str, patch: JsonObject) -> JsonObject:
        return self._json(
            "PATCH", path, {}, body=patch, content_type="application/merge-patch+json"
        )

    def patch_json(self, path: str, operations: JsonPatch) -> JsonObject:
        """A JSON patch (RFC 6902): with a ``test`` operation first, it applies only if the
        object still holds what the caller saw (the server answers 422 otherwise)."""
        return self._json(
            "PATCH", path, {}, body=operations, content_type="application/json-patch+json"
        )

    def watch(
        self, path: str, resource_version: str, timeout_s: int, **query: str
    ) -> Iterator[WatchEvent]:
        """The events after ``resource_version`` until the server ends the watch."""
        params = dict(query, watch="true", resourceVersion=resource_version)
        params.update(allowWatchBookmarks="true", timeoutSeconds=str(timeout_s))
        conn = self._connection(timeout_s + REQUEST_TIMEOUT)
        try:
            response = self._send(conn, "GET", path, params, None, "")
            self._check(response)
            for line in response:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type", ""), event.get("object") or {}
                if kind == "ERROR":
                    code = int(obj.get("code") or 0)
                    message = str(obj.get("message") or "watch failed")
                    raise (WatchExpired if code == 410 else ApiError)(message, code)
                yield WatchEvent(kind, obj)
        finally:
            conn.close()

    def _json(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        body: JsonObject | JsonPatch | None = None,
        content_type: str = "",
    ) -> JsonObject:
        conn = self._connection(REQUEST_TIMEOUT)
        try:
            response = self._send(conn, method, path, query, body, content_type)
            self._check(response)
            result: JsonObject = json.loads(response.read())
            return result
        finally:
            conn.close()

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._tls is not None:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._tls
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        query: Mapping[str, str],
        body: JsonObject | JsonPatch | None,
        content_type: str,
    ) -> http.client.HTTPResponse:
        headers = {"Accept": "application/json"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        target = f"{path}?{urlencode(query)}" if query else path
        try:
            conn.request(method, target, body=data, headers=headers)
            return conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(f"{method} {path}: {exc}") from None

    def _token(self) -> str:
        if self._endpoint.token_path is None:
            return ""
        try:
            return self._endpoint.token_path.read_text().strip()
        except OSError as exc:
            raise ApiError(f"service-account token unreadable: {exc.strerror}") from None

    @staticmethod
    def _check(response: http.client.HTTPResponse) -> None:
        if 200 <= response.status < 300:
            return
        text = response.read(4096).decode(errors="replace")
        try:
            message = str(json.loads(text).get("message") or text)
        except ValueError:
            message = text
        kind = WatchExpired if response.status == 410 else ApiError
        raise kind(f"HTTP {response.status}: {message[:512]}", response.status)
