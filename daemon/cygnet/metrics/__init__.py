"""Prometheus metrics of the daemons: one registry per process, served over HTTP.

- rpc.py: per-operation counts, latency histograms and errors by status code,
  recorded by a gRPC interceptor (and by `timed` for work outside an RPC).
- snapshot.py: gauges computed in the event loop and swapped in atomically,
  so a scrape never runs `zfs` or touches the store.
- agent.py / coordinator.py: what each daemon reports.
- http.py: the /metrics endpoint.
"""

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

# The daemons' own registry, not prometheus_client's global one: nothing a
# library registers by import ends up in our exposition.
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
