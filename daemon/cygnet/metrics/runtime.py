"""Starts a daemon's metrics: the snapshot gauges' refresh task and the HTTP endpoint."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cygnet.metrics import REGISTRY
from cygnet.metrics.http import Endpoint, serve
from cygnet.metrics.snapshot import Build, SnapshotCollector


@dataclass
class Running:
    endpoint: Endpoint
    collector: SnapshotCollector
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.endpoint.stop()
        REGISTRY.unregister(self.collector)


async def start(listen: str, build: Build, interval: float, stop: asyncio.Event
                ) -> Running | None:
    """None when `listen` is empty: metrics are off and nothing is collected."""
    if not listen:
        return None
    collector = SnapshotCollector(build)
    await collector.refresh()  # the first scrape already sees every gauge
    endpoint = serve(listen, REGISTRY)
    assert endpoint is not None
    REGISTRY.register(collector)
    return Running(endpoint, collector, asyncio.create_task(collector.run(stop, interval)))
