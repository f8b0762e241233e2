"""Starts what watches branches' lives: the event journal, webhooks, the expiry loop."""

from __future__ import annotations

import asyncio

from cygnet.agent import events, expiry
from cygnet.agent.eventlog import EventJournal, open_on_pool
from cygnet.agent.host import Host
from cygnet.agent.webhooks import Webhooks


async def open_events(host: Host) -> tuple[EventJournal, Webhooks]:
    """Opens the journal and checks the webhook settings (bad ones stop the start);
    events are recorded from here on."""
    hooks = Webhooks(host.config.webhook_urls, host.config.webhook_secret_file)
    journal = await open_on_pool(host)
    await asyncio.to_thread(hooks.resume, journal)  # what the last run had not delivered
    journal.listeners.append(hooks.offer)
    events.configure(journal.add)
    return journal, hooks


def start(host: Host, journal: EventJournal, hooks: Webhooks, stop: asyncio.Event
          ) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(journal.run(stop)), asyncio.create_task(hooks.run()),
            asyncio.create_task(expiry.run(host, stop))]
