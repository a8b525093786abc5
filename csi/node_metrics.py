"""What this node holds, read at scrape time: a Prometheus collector over the stores and
the host (the families are declared in ``csi.metrics``).

Nothing is counted by hand: each scrape reads the in-memory records, stats the images,
asks statvfs for the data root and looks the recorded images' loop devices up by identity
(one ``LoopTable`` per scrape, opening only candidate devices, as every lookup does). It
reads, never writes, and takes none of the volume locks. A part that cannot be read is
logged and counted in ``localvol_scrape_errors``; the rest of the scrape still answers.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from csi import metrics
from csi.host import fs, loopdev
from csi.state.records import Phase
from csi.state.store import RecordStore
from csi.volumes.backend import facts_for
from csi.volumes.groups import GroupSnapshots
from csi.volumes.manager import Volumes
from csi.volumes.snapshots import Snapshots

log = logging.getLogger(__name__)


def allocated_bytes(path: Path) -> int:
    """Disk space a (sparse) file takes, 0 if it is gone."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


class NodeCollector(Collector):
    def __init__(
        self,
        volumes: Volumes,
        snapshots: Snapshots | None = None,
        groups: GroupSnapshots | None = None,
    ) -> None:
        self._volumes = volumes
        self._snapshots = snapshots
        self._groups = groups

    def describe(self) -> Iterable[Metric]:
        return [metrics.gauge(spec) for spec in metrics.GAUGES]

    def collect(self) -> Iterable[Metric]:
        errors: Counter[str] = Counter()
        parts: list[tuple[str, Callable[[], Iterator[GaugeMetricFamily]]]] = [
            ("records", self._records),
            ("data_root", self._data_root),
            ("used", self._used),
            ("loop_devices", self._loop_devices),
        ]
        for part, read in parts:
            try:
                families = list(read())
            except Exception as exc:
                log.warning("event=metrics_part_failed part=%s error=%s", part, type(exc).__name__)
                errors[part] += 1
                continue
            yield from families
        family = metrics.gauge(metrics.SCRAPE_ERRORS)
        for part, _ in parts:
            family.add_metric([part], errors[part])
        yield family

    # -- parts -------------------------------------------------------------------
    def _stores(self) -> list[tuple[str, RecordStore[Any]]]:
        stores: list[tuple[str, RecordStore[Any]]] = [("volume", self._volumes.store)]
        if self._snapshots is not None:
            stores.append(("snapshot", self._snapshots.store))
        if self._groups is not None:
            stores.append(("group", self._groups.store))
        return stores

    def _records(self) -> Iterator[GaugeMetricFamily]:
        records = self._volumes.store.all()
        volumes = metrics.gauge(metrics.VOLUMES)
        by_kind = Counter((facts_for(r).name, r.phase.value) for r in records)
        for (kind, phase), count in sorted(by_kind.items()):
            volumes.add_metric([kind, phase], count)
        yield volumes
        provisioned = metrics.gauge(metrics.PROVISIONED)
        sizes: Counter[str] = Counter()
        for record in records:
            if record.phase is Phase.READY:
                sizes[facts_for(record).name] += record.capacity_bytes
        for kind, size in sorted(sizes.items()):
            provisioned.add_metric([kind], size)
        yield provisioned
        snapshots = metrics.gauge(metrics.SNAPSHOTS)
        if self._snapshots is not None:
            by_snap = Counter(
                (facts_for(s).name, s.phase.value) for s in self._snapshots.store.all()
            )
            for (kind, phase), count in sorted(by_snap.items()):
                snapshots.add_metric([kind, phase], count)
        yield snapshots
        groups = metrics.gauge(metrics.GROUP_SNAPSHOTS)
        if self._groups is not None:
            by_phase = Counter(g.phase.value for g in self._groups.store.all())
            for phase, count in sorted(by_phase.items()):
                groups.add_metric([phase], count)
        yield groups
        quarantined = metrics.gauge(metrics.QUARANTINED)
        for name, store in self._stores():
            quarantined.add_metric([name, "damaged"], len(store.quarantined()))
            quarantined.add_metric([name, "too_new"], len(store.too_new()))
        yield quarantined

    def _data_root(self) -> Iterator[GaugeMetricFamily]:
        usage = fs.usage(self._volumes.layout.root)
        free = metrics.gauge(metrics.DATA_ROOT_FREE)
        free.add_metric([], usage.available_bytes)
        size = metrics.gauge(metrics.DATA_ROOT_SIZE)
        size.add_metric([], usage.total_bytes)
        yield free
        yield size
        held = metrics.gauge(metrics.DIRECTORY_QUOTA)
        held.add_metric([], int(self._volumes.quotas.enforced))
        yield held

    def _used(self) -> Iterator[GaugeMetricFamily]:
        layout = self._volumes.layout
        used = metrics.gauge(metrics.USED)
        images = sum(
            allocated_bytes(layout.image_path(r.volume_id))
            for r in self._volumes.store.all()
            if facts_for(r).loop_device
        )
        used.add_metric(["volume"], images)
        if self._snapshots is not None:
            copies = sum(
                allocated_bytes(self._snapshots.content_path(s))
                for s in self._snapshots.store.all()
                if facts_for(s).loop_device
            )
            used.add_metric(["snapshot"], copies)
        yield used

    def _loop_devices(self) -> Iterator[GaugeMetricFamily]:
        layout = self._volumes.layout
        family = metrics.gauge(metrics.LOOP_DEVICES)
        loop_records = [r for r in self._volumes.store.all() if facts_for(r).loop_device]
        attached: Counter[str] = Counter()
        if loop_records:
            table = loopdev.LoopTable.read()
            for record in loop_records:
                image = layout.image_path(record.volume_id)
                attached[facts_for(record).name] += len(table.devices_of(image, read_only=None))
        for kind in sorted({facts_for(r).name for r in loop_records} | set(attached)):
            family.add_metric([kind], attached[kind])
        yield family
