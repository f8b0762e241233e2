"""Starts what watches branches' lives: the event journal, webhooks, the expiry loop;
and reports them as metrics."""

from __future__ import annotations

import asyncio

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from cygnet.agent import events, expiry
from cygnet.agent.eventlog import EventJournal, open_on_pool
from cygnet.agent.host import Host
from cygnet.agent.webhooks import Webhooks, shown_url

_running: tuple[EventJournal, Webhooks] | None = None


async def open_events(host: Host) -> tuple[EventJournal, Webhooks]:
    """Opens the journal and checks the webhook settings (bad ones stop the start);
    events are recorded from here on."""
    hooks = Webhooks(host.config.webhook_urls, host.config.webhook_secret_file)
    journal = await open_on_pool(host)
    await asyncio.to_thread(hooks.resume, journal)  # what the last run had not delivered
    journal.listeners.append(hooks.offer)
    events.configure(journal.add)
    global _running
    _running = journal, hooks
    return journal, hooks


def start(host: Host, journal: EventJournal, hooks: Webhooks, stop: asyncio.Event
          ) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(journal.run(stop)), asyncio.create_task(hooks.run()),
            asyncio.create_task(expiry.run(host, stop))]


def metrics() -> list[Metric]:
    """The journal's cursors, branches expired, and each webhook's deliveries."""
    out: list[Metric] = []
    expired = CounterMetricFamily("cygnet_branches_expired", "Branches the expiry loop deleted")
    expired.add_metric([], float(expiry.expired_total))
    out.append(expired)
    if _running is None:
        return out
    journal, hooks = _running
    cursor = GaugeMetricFamily("cygnet_events_cursor",
                               "Newest event written and oldest kept in the journal", None,
                               ["end"])
    cursor.add_metric(["newest"], float(journal.durable))
    cursor.add_metric(["oldest"], float(journal.oldest))
    out.append(cursor)
    delivered = CounterMetricFamily("cygnet_webhook_delivered", "Events a webhook accepted",
                                    labels=["url"])
    dropped = CounterMetricFamily("cygnet_webhook_dropped",
                                  "Events given up on after every retry", labels=["url"])
    queued = GaugeMetricFamily("cygnet_webhook_queue", "Events waiting for a webhook",
                               labels=["url"])
    for hook in hooks.hooks:
        url = [shown_url(hook.url)]
        delivered.add_metric(url, float(hook.delivered))
        dropped.add_metric(url, float(hook.dropped))
        queued.add_metric(url, float(len(hook.queue)))
    return [*out, delivered, dropped, queued]
