"""Scrape a driver's /metrics over HTTP and read it with prometheus-client's own parser."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from csi.server import Driver

Labels = tuple[tuple[str, str], ...]


class Scrape:
    """One scrape: its text, families by name and samples by (name, labels)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[tuple[str, Labels], float] = {}
        for family in self.families.values():
            for sample in family.samples:
                self.samples[(sample.name, _key(sample))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """A sample's value, 0 when the series does not exist (yet)."""
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _key(sample: Sample) -> Labels:
    return tuple(sorted(sample.labels.items()))


def scrape(port: int, path: str = "/metrics") -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        return Scrape(reply.read().decode())


@contextmanager
def serving_metrics(driver: Driver) -> Iterator[int]:
    """Start the driver's health listener (built with health_address) and give its port."""
    assert driver.health is not None, "build the driver with health_address"
    driver.health.start()
    try:
        yield driver.health.port
    finally:
        driver.health.stop()
