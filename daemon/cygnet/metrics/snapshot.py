"""Gauges computed in the event loop, served from the last complete snapshot.

Collecting them means running `zfs get` or reading the store; doing that in the
scrape thread would race the event loop and let a slow scrape stall. Instead a
task rebuilds the metric families every `interval` and swaps one reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger("cygnet.metrics")

Build = Callable[[], Awaitable[list[Metric]]]


class SnapshotCollector(Collector):
    def __init__(self, build: Build) -> None:
        self._build = build
        self._metrics: list[Metric] = []
        self._ok = 0.0

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics
        ok = GaugeMetricFamily("cygnet_metrics_refresh_ok",
                               "1 when the last refresh of these gauges worked")
        ok.add_metric([], self._ok)
        yield ok

    async def refresh(self) -> None:
        try:
            self._metrics = await self._build()
            self._ok = 1.0
        except Exception:
            self._ok = 0.0
            log.exception("metrics refresh failed")

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            await self.refresh()


def gauge(name: str, doc: str, labels: Iterable[str],
          samples: Iterable[tuple[Iterable[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for values, value in samples:
        family.add_metric(list(values), value)
    return family
