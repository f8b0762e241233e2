"""A new leader's catalog sync of every host runs a bounded number at a time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cygnet.coordinator import registry


class FakeHost:
    def __init__(self, n: int) -> None:
        self.id = f"h{n}"


def test_sync_of_many_hosts_is_bounded_and_survives_failures(
        monkeypatch: pytest.MonkeyPatch) -> None:
    running, peak, done = 0, 0, []

    async def sync_host(self: registry.Registry, host: Any) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        if host.id == "h13":
            raise RuntimeError("a host that breaks its sync")
        done.append(host.id)

    monkeypatch.setattr(registry.Registry, "sync_host", sync_host)
    reg = registry.Registry.__new__(registry.Registry)
    hosts: list[Any] = [FakeHost(n) for n in range(500)]
    asyncio.run(reg.sync_hosts(hosts))
    assert peak == registry.SYNC_CONCURRENCY
    assert sorted(done) == sorted(f"h{n}" for n in range(500) if n != 13)
