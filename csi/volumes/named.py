"""Docker and Podman named volumes, made and mounted through the same layers as CSI volumes.

A Docker volume called ``web-data`` is the CSI volume named ``docker/web-data`` (CSI names
cannot hold a ``/``, so the two never meet); its ID follows from that name as any volume's
does. Create goes through ``Provisioner.create`` (limits, sizing, retries), with ``Opts``
read as StorageClass parameters (csi.volumes.params) plus ``size``, a Kubernetes quantity,
and the encryption key as ``encryptionKey`` (the key) or ``encryptionKeyFile`` (a file
holding it, read again at every mount). Mount stages the volume at a path of its own under
the data root and publishes it onto a second one, which is what Docker gets; so an
encrypted volume hands over its data directory and a directory volume its directory, as a
pod would see them. Every call holds the volume's lock from the one ``KeyedLocks`` the CSI
services use, so a volume is never worked on by both at once; a volume a pod has staged
cannot be mounted for Docker (it is staged elsewhere) and the other way round.

The plugin's own record (csi.state.plugin_records) keeps the Docker name, the key and the
mount IDs. The order of writes keeps it a superset of the host: Mount records the ID before
staging and Unmount unstages before dropping the last one; Create writes it before the
volume is made, Remove drops it after the volume is gone. ``reconcile`` (at start-up, after
the volumes' own reconciliation) drops records whose volume is gone, and mount IDs of a
volume that is not staged here (a Mount that never finished); the IDs of a volume a reboot
unmounted stay, and the next Mount mounts it again, as a staging path does.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csi.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from csi.host import files
from csi.layout import Layout, volume_id_for_name
from csi.locks import KeyedLocks
from csi.pb import csi_pb2
from csi.state.plugin_records import PluginRecord, PluginStore
from csi.state.records import AccessType, Phase, VolumeRecord
from csi.units import parse_size
from csi.validation import Capability, check_map
from csi.volumes import encryption, health
from csi.volumes.manager import Volumes
from csi.volumes.params import parse_spec, volume_context
from csi.volumes.provisioning import NewVolume, Provisioner

log = logging.getLogger(__name__)

NAME_PREFIX = "docker/"
# Docker's own grammar for volume names, kept within a CSI name's 128 bytes.
DOCKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,119}")
MAX_MOUNT_ID_BYTES = 256
OPT_SIZE = "size"
OPT_KEY = "encryptionKey"
OPT_KEY_FILE = "encryptionKeyFile"
MAX_KEY_FILE_BYTES = 4096
# Containers share a named volume: many writers on this one node.
SHARED = Capability(
    AccessType.MOUNT,
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_MULTI_WRITER,
    "",
    (),
    "",
)


def csi_name(name: str) -> str:
    """The CSI volume name of a Docker volume name; INVALID_ARGUMENT for a bad name."""
    if not isinstance(name, str) or not DOCKER_NAME.fullmatch(name):
        raise InvalidArgument(
            "Name must be 1-120 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return NAME_PREFIX + name


@dataclass(frozen=True)
class NamedVolume:
    """A volume as the plugin protocol describes it."""

    name: str
    mountpoint: str  # "" unless mounted
    status: dict[str, Any]


@dataclass(frozen=True)
class _Request:
    """Create's options, read."""

    new: NewVolume
    key_file: str
    key: str


def _read_key_file(raw: str) -> str:
    """The key held in ``raw`` (an absolute path to a regular file), one trailing newline
    dropped; the file's content never appears in an error."""
    if not raw.startswith("/") or "\x00" in raw or any(p == ".." for p in raw.split("/")):
        raise InvalidArgument(f"{OPT_KEY_FILE} must be an absolute path without '..'")
    try:
        data = files.read_regular_file(raw, MAX_KEY_FILE_BYTES)
    except OSError as exc:
        raise FailedPrecondition(f"{OPT_KEY_FILE} cannot be opened: {exc.strerror}") from None
    except ValueError:
        raise InvalidArgument(f"{OPT_KEY_FILE} must name a regular file") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise InvalidArgument(f"{OPT_KEY_FILE} holds more than {MAX_KEY_FILE_BYTES} bytes")
    text = data.decode("utf-8", "replace")
    text = text[:-1] if text.endswith("\n") else text
    if not text:  # (secret_from's wording for an empty key is about a StorageClass's Secret)
        raise InvalidArgument(f"{OPT_KEY_FILE} is empty")
    return text


def parse_opts(name: str, opts: object) -> _Request:
    """Create's ``Opts``: StorageClass parameters, ``size`` and the key; anything else is
    refused, as a StorageClass's unknown parameters are."""
    if opts is None:
        opts = {}
    if not isinstance(opts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in opts.items()
    ):
        raise InvalidArgument("Opts must map option names to strings")
    check_map(opts, "Opts")
    parameters = {k: v for k, v in opts.items() if k not in (OPT_SIZE, OPT_KEY, OPT_KEY_FILE)}
    spec = parse_spec(parameters, [AccessType.MOUNT], [])
    required = 0
    if OPT_SIZE in opts:
        try:
            required = parse_size(opts[OPT_SIZE])
        except ValueError as exc:
            raise InvalidArgument(f"{OPT_SIZE}: {exc}") from None
        if required == 0:
            raise InvalidArgument(f"{OPT_SIZE} must be above zero")
    key, key_file = opts.get(OPT_KEY, ""), opts.get(OPT_KEY_FILE, "")
    secret = None
    if spec.encrypted:
        if bool(key) == bool(key_file):
            raise InvalidArgument(
                f"an encrypted volume needs exactly one of {OPT_KEY} or {OPT_KEY_FILE}"
            )
        secret = encryption.secret_from({encryption.SECRET_KEY: key or _read_key_file(key_file)})
    elif OPT_KEY in opts or OPT_KEY_FILE in opts:
        raise InvalidArgument(f"{OPT_KEY} and {OPT_KEY_FILE} need encryption=fscrypt")
    new = NewVolume(name=csi_name(name), spec=spec, required=required, secret=secret)
    return _Request(new, key_file, key)


class NamedVolumes:
    def __init__(
        self,
        volumes: Volumes,
        provisioner: Provisioner,
        locks: KeyedLocks,
        store: PluginStore,
        lock_wait: float = 0.0,
    ) -> None:
        self._volumes = volumes
        # Docker and Podman never retry a call: one on a volume another call holds waits
        # this long for its turn (csi.docker_plugin gives its calls' budget).
        self._lock_wait = lock_wait
        self._layout: Layout = volumes.layout
        self._provisioner = provisioner
        self._locks = locks
        self._store = store
        files.make_dir(self._layout.plugin_dir, parents=True)

    # -- lookups -------------------------------------------------------------------
    def _volume(self, name: str) -> tuple[str, VolumeRecord | None]:
        full = csi_name(name)
        volume_id = volume_id_for_name(full)
        self._volumes.store.check_usable(volume_id)
        self._store.check_usable(volume_id)
        return volume_id, self._volumes.existing_for_name(full, volume_id)

    def _ready(self, name: str) -> VolumeRecord:
        _, record = self._volume(name)
        if record is None or record.phase is not Phase.READY:
            raise NotFound(f"no such volume: {name}")
        return record

    def _mountpoint(self, record: VolumeRecord) -> str:
        plugin = self._store.get(record.volume_id)
        target = self._layout.plugin_mount(record.volume_id)
        return str(target) if plugin and plugin.mount_ids and str(target) in record.targets else ""

    def _secret(self, plugin: PluginRecord) -> dict[str, str]:
        key = plugin.key or (_read_key_file(plugin.key_file) if plugin.key_file else "")
        return {encryption.SECRET_KEY: key} if key else {}

    # -- the protocol's calls -----------------------------------------------------
    def create(self, name: str, opts: object) -> None:
        request = parse_opts(name, opts)
        new = request.new
        volume_id = new.id
        with self._locks.hold(volume_id, wait=self._lock_wait):
            self._store.check_usable(volume_id)
            prior = self._store.get(volume_id)
            wanted = PluginRecord(volume_id, name, key_file=request.key_file, key=request.key)
            if prior is not None:
                same_key = hmac.compare_digest(prior.key, wanted.key)
                if prior.name != name or prior.key_file != wanted.key_file or not same_key:
                    raise AlreadyExists(f"volume {name} exists with another key")
                wanted = prior
            else:
                self._store.put(wanted)
            try:
                self._provisioner.create(new)
            except BaseException:
                if prior is None and self._volumes.existing_for_name(new.name, volume_id) is None:
                    self._store.remove(volume_id)
                raise

    def remove(self, name: str) -> None:
        """Remove the volume; Docker and Podman only ask once no container uses it, so mounts
        the record still holds (a caller that died) are undone first."""
        volume_id, record = self._volume(name)
        with self._locks.hold(volume_id, wait=self._lock_wait):
            record = self._volumes.store.get(volume_id)
            if record is not None and record.name == csi_name(name):
                record = self._release(record)
                self._volumes.delete(record)
            self._store.remove(volume_id)
            self._remove_dirs(volume_id)

    def mount(self, name: str, mount_id: object, commit: Callable[[], bool] = lambda: True) -> str:
        """Mount for ``mount_id``; the mount point. ``commit`` is asked last, under the
        volume's lock: False (the caller stopped waiting and will never unmount) undoes the
        mount, so none is left that nothing would ever unmount."""
        mount_id = _mount_id(mount_id)
        volume_id, _ = self._volume(name)
        with self._locks.hold(volume_id, wait=self._lock_wait):
            record = self._ready(name)
            before = self._store.get(volume_id) or PluginRecord(volume_id, name)
            plugin = before
            if mount_id not in plugin.mount_ids:
                plugin = plugin.with_changes(mount_ids=(*plugin.mount_ids, mount_id))
                self._store.put(plugin)
            try:
                target = str(self._attach(record, plugin))
                if not commit():
                    raise Unavailable(
                        f"Mount of {name} finished after its caller stopped waiting: undone"
                    )
                return target
            except BaseException:
                if not before.mount_ids:
                    with contextlib.suppress(Exception):
                        self._release(self._volumes.store.get(volume_id) or record)
                if plugin is not before:
                    self._store.put(before)
                raise

    def unmount(self, name: str, mount_id: object) -> None:
        mount_id = _mount_id(mount_id)
        volume_id, _ = self._volume(name)
        with self._locks.hold(volume_id, wait=self._lock_wait):
            plugin = self._store.get(volume_id)
            if plugin is None or mount_id not in plugin.mount_ids:
                return  # not held under this ID (or already released): nothing to undo
            remaining = tuple(m for m in plugin.mount_ids if m != mount_id)
            record = self._volumes.store.get(volume_id)
            if not remaining and record is not None:
                self._release(record)
            self._store.put(plugin.with_changes(mount_ids=remaining))

    def path(self, name: str) -> str:
        return self._mountpoint(self._ready(name))

    def get(self, name: str) -> NamedVolume:
        """The volume, for every volume Docker may know: one whose record this driver
        refuses (damaged, or a newer driver's) is still described, with the reason."""
        full = csi_name(name)
        volume_id = volume_id_for_name(full)
        try:
            volume_id, record = self._volume(name)
        except FailedPrecondition as exc:
            return NamedVolume(
                name, "", {"volumeId": volume_id, "abnormal": True, "health": exc.message}
            )
        if record is None:
            raise NotFound(f"no such volume: {name}")
        return self._describe(name, record, health.HostView.of(record))

    def list_volumes(self) -> list[NamedVolume]:
        host = health.HostView.read()
        found: list[NamedVolume] = []
        for record in sorted(self._volumes.store.all(), key=lambda r: r.name):
            name = record.name.removeprefix(NAME_PREFIX)
            if record.name.startswith(NAME_PREFIX) and record.phase is not Phase.DELETING:
                found.append(self._describe(name, record, host))
        return found

    def _describe(self, name: str, record: VolumeRecord, host: health.HostView) -> NamedVolume:
        status: dict[str, Any] = {
            "volumeId": record.volume_id,
            "phase": record.phase.value,
            "sizeBytes": record.capacity_bytes,
            **volume_context(record.spec),
        }
        if record.phase is Phase.READY:
            condition = health.check(self._volumes, record, host)
            status["abnormal"] = condition.abnormal
            status["health"] = condition.message
        return NamedVolume(name, self._mountpoint(record), status)

    # -- the host ------------------------------------------------------------------
    def _attach(self, record: VolumeRecord, plugin: PluginRecord) -> Path:
        """Stage and publish ``record`` at the plugin's paths (each a no-op once done)."""
        stage = self._layout.plugin_stage(record.volume_id)
        target = self._layout.plugin_mount(record.volume_id)
        files.make_dir(stage, parents=True)
        self._volumes.stage(record, stage, SHARED, self._secret(plugin))
        staged = self._volumes.store.require_ready(record.volume_id)
        self._volumes.publish(staged, stage, target, SHARED, read_only=False)
        return target

    def _release(self, record: VolumeRecord) -> VolumeRecord:
        """Unpublish and unstage the plugin's paths; the record as it is after."""
        volume_id = record.volume_id
        stage = self._layout.plugin_stage(volume_id)
        target = self._layout.plugin_mount(volume_id)
        self._volumes.unpublish(record, target)
        record = self._volumes.store.get(volume_id) or record
        self._volumes.unstage(record, stage)
        return self._volumes.store.get(volume_id) or record

    def _remove_dirs(self, volume_id: str) -> None:
        stage = self._layout.plugin_stage(volume_id)
        for path in (stage, self._layout.plugin_mount(volume_id), stage.parent):
            with contextlib.suppress(OSError):
                files.remove_dir(path)

    # -- start-up ------------------------------------------------------------------
    def reconcile(self) -> None:
        """Bring the plugin's records in line with the volumes (after their reconciliation)."""
        for damaged in self._store.load():
            log.error(
                "event=damaged_record path=%s reason=%s action=left_in_place_and_quarantined",
                damaged.path,
                damaged.reason,
            )
        for plugin in self._store.all():
            try:
                self._settle(plugin)
            except Exception as exc:
                self._store.quarantine(plugin.volume_id)
                log.error(
                    "event=reconcile_step_failed subject=%s error=%s: %s action=quarantined",
                    plugin.volume_id,
                    type(exc).__name__,
                    exc,
                )

    def _settle(self, plugin: PluginRecord) -> None:
        volume_id = plugin.volume_id
        record = self._volumes.store.get(volume_id)
        if record is None or record.name != csi_name(plugin.name):
            self._store.remove(volume_id)  # a Create rolled back, or a Remove that crashed
            self._remove_dirs(volume_id)
            log.info("event=plugin_record_dropped volume=%s reason=no_volume", volume_id)
            return
        staged_here = record.staging_path == str(self._layout.plugin_stage(volume_id))
        if plugin.mount_ids and not staged_here:
            # A Mount that never finished (or an Unmount that had unstaged): nobody got a path.
            self._store.put(plugin.with_changes(mount_ids=()))
            log.info("event=plugin_mounts_dropped volume=%s reason=not_staged", volume_id)
        elif not plugin.mount_ids and staged_here:
            self._release(record)
            log.info("event=plugin_volume_released volume=%s reason=no_mount_ids", volume_id)


def _mount_id(value: object) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InvalidArgument("ID must be a non-empty string")
    if len(value.encode("utf-8")) > MAX_MOUNT_ID_BYTES:
        raise InvalidArgument(f"ID is longer than {MAX_MOUNT_ID_BYTES} bytes")
    return value


def describe(volume: NamedVolume) -> Mapping[str, Any]:
    """A volume as the protocol's replies carry it."""
    return {"Name": volume.name, "Mountpoint": volume.mountpoint, "Status": volume.status}
