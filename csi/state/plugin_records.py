"""The Docker volume plugin's record of each volume it made: its Docker name, the key it
opens with, and the mount IDs Docker or Podman hold on it.

One JSON file per volume under ``<data-dir>/state/docker``, written like every record
(csi.state.store: temp file, fsync, rename, fsync of the directory). The volume itself keeps
its own record in the volume store; this one only adds what the plugin protocol needs and
CSI has no place for. Its shape has not changed since it was introduced (schema 2), so
every older schema step is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from csi.host import modes
from csi.layout import Layout
from csi.state import migrations
from csi.state.records import Phase
from csi.state.reserve import TeardownReserve
from csi.state.store import RecordStore


def _unchanged(data: dict[str, Any]) -> dict[str, Any]:
    return data


PLUGIN_STEPS: dict[int, migrations.Step] = {n: _unchanged for n in range(1, migrations.CURRENT)}


@dataclass(frozen=True)
class PluginRecord:
    volume_id: str
    name: str  # the Docker volume name (the volume's own record holds "docker/<name>")
    mount_ids: tuple[str, ...] = ()
    # An encrypted volume's key: a file read at every mount, or the key itself when the
    # user gave it as an option (Docker keeps the options in its own state too).
    key_file: str = ""
    key: str = field(default="", repr=False)

    @property
    def record_id(self) -> str:
        return self.volume_id

    @property
    def phase(self) -> Phase:
        return Phase.READY

    def with_changes(self, **changes: Any) -> PluginRecord:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": migrations.CURRENT,
            "volume_id": self.volume_id,
            "name": self.name,
            "mount_ids": list(self.mount_ids),
            "key_file": self.key_file,
            "key": self.key,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PluginRecord:
        if data.get("schema") != migrations.CURRENT:
            raise ValueError(f"unsupported record schema {data.get('schema')!r}")
        return cls(
            volume_id=str(data["volume_id"]),
            name=str(data["name"]),
            mount_ids=tuple(str(m) for m in data.get("mount_ids", [])),
            key_file=str(data.get("key_file", "")),
            key=str(data.get("key", "")),
        )


class PluginStore(RecordStore[PluginRecord]):
    """Plugin records under ``<data-dir>/state/docker``."""

    what = "docker volume"

    def __init__(self, layout: Layout) -> None:
        layout.plugin_state_dir.mkdir(parents=True, exist_ok=True, mode=modes.PRIVATE_DIR)
        super().__init__(
            layout.plugin_state_dir,
            PluginRecord.from_json,
            PLUGIN_STEPS,
            TeardownReserve(layout.teardown_reserve),
        )
