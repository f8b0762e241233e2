"""The leader's periodic index rebuild runs beside the lease renewals, never in their way."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cygnet.coordinator.leadership import Leadership
from cygnet.coordinator.store import open_store
from tests.integration.coordinator_helpers import simulated_hosts

pytestmark = pytest.mark.integration


def test_rebuild_does_not_hold_up_the_renewal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    simulated_hosts(url, 50, max_clusters=100)
    store = open_store(url)

    async def scenario() -> None:
        lead = Leadership(store, ttl=30, reload_every=0)
        await lead.tick()  # takes the lead: the first index is built at once
        first = lead.placer
        assert lead.leading and first is not None and len(first.index.hosts) == 50
        await lead.tick()  # renews, and starts a rebuild without waiting for it
        assert lead.placer is first and lead._reload is not None
        await lead._reload
        assert lead.placer is not first and lead.leading and lead.placer is not None
        assert len(lead.placer.index.hosts) == 50
        await lead.tick()
        await lead._lose()  # a rebuild under way is dropped with the lead
        assert lead._reload.done() and lead.placer is None and not lead.leading
        await lead.resign()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
