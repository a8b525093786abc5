"""The Docker volume-plugin protocol as Docker and Podman speak it: JSON over HTTP on the
plugin's unix socket, as root."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path


def plugin_request(
    path: Path, call: str, body: dict[str, object], timeout: float = 30
) -> tuple[int, dict[str, object]]:
    """POST ``body`` to ``call`` (``/VolumeDriver.Create``...); the HTTP status and the
    decoded reply. A connection the driver drops raises (OSError, HTTPException)."""

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(str(path))

    connection = Connection("localhost", timeout=timeout)
    try:
        connection.request("POST", call, json.dumps(body).encode())
        response = connection.getresponse()
        reply: dict[str, object] = json.loads(response.read())
        return response.status, reply
    finally:
        connection.close()


def plugin_call(path: Path, call: str, body: dict[str, object]) -> dict[str, object]:
    """One call that must succeed (200); its reply."""
    status, reply = plugin_request(path, call, body)
    assert status == 200, reply
    return reply
