"""What cygnet-coordinator reports: hosts by state and each host's heartbeat age.

Placement latency needs nothing here: it is the `place_database` (and
`create_database`) operation histogram that the RPC interceptor records.
"""

from __future__ import annotations

import time

from prometheus_client.metrics_core import Metric

from cygnet.coordinator.models import HostRecord
from cygnet.coordinator.registry import Registry
from cygnet.metrics.snapshot import gauge


def host_state(host: HostRecord) -> str:
    if not host.available:
        return "unavailable"
    return "drained" if host.drained else "available"


class CoordinatorMetrics:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def build(self) -> list[Metric]:
        hosts = await self.registry.list()
        counts = dict.fromkeys(("available", "drained", "unavailable"), 0)
        for host in hosts:
            counts[host_state(host)] += 1
        now = time.time()
        return [
            gauge("cygnet_coordinator_hosts", "Registered hosts by state", ["state"],
                  (((s,), float(n)) for s, n in counts.items())),
            gauge("cygnet_coordinator_host_up", "1 while the host sends heartbeats",
                  ["host"], (((h.id,), float(h.available)) for h in hosts)),
            gauge("cygnet_coordinator_host_heartbeat_age_seconds",
                  "Seconds since the host's last heartbeat", ["host"],
                  (((h.id,), max(0.0, now - h.last_heartbeat)) for h in hosts)),
            gauge("cygnet_coordinator_heartbeat_interval_seconds",
                  "How often hosts are told to send heartbeats", [],
                  [((), self.registry.config.heartbeat_interval)]),
            gauge("cygnet_coordinator_host_databases",
                  "Databases the catalog places on each host", ["host"],
                  (((h.id,), float(h.db_count)) for h in hosts)),
        ]
