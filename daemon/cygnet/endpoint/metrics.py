"""What the endpoint reports to Prometheus (metrics/agent.py adds it to cygnetd's)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from cygnet.endpoint.relay_link import Relay
from cygnet.metrics.snapshot import gauge

# Connections the endpoint answered with an error of its own, by SQLSTATE.
_refused: Counter[str] = Counter()
# Connections routed by `options=endpoint=` (TLS terminated, relayed in Python).
_terminated = 0
# Connections routed by SNI and handed to the branch's postmaster (no relay).
_handed_off = 0
_relay: Relay | None = None  # set while an endpoint runs


def _none() -> int:
    return 0


_options_active: Callable[[], int] = _none


def use_relay(relay: Relay | None, options_active: Callable[[], int] = _none) -> None:
    """The running endpoint's relay, whose counters are reported, and how many
    options= sessions run now (in cygnetd and the relay process); None: no endpoint."""
    global _relay, _options_active
    _relay, _options_active = relay, options_active


def refused(sqlstate: str) -> None:
    _refused[sqlstate] += 1


def terminated() -> None:
    global _terminated
    _terminated += 1


def handed_off() -> None:
    global _handed_off
    _handed_off += 1


def metrics() -> list[Metric]:
    if _relay is None:
        return []
    active, total, up, down = _relay.stats()
    relayed = CounterMetricFamily("cygnet_endpoint_relayed_connections",
                                  "Connections routed by TLS SNI to the C relay (their "
                                  "postmaster could not take them, or endpoint_handoff is off)")
    relayed.add_metric([], float(total))
    moved = CounterMetricFamily("cygnet_endpoint_relayed_bytes",
                                "Bytes the C relay moved", labels=["direction"])
    moved.add_metric(["client_to_branch"], float(up))
    moved.add_metric(["branch_to_client"], float(down))
    handed = CounterMetricFamily("cygnet_endpoint_handed_off_connections",
                                 "Connections routed by TLS SNI and handed to the branch's "
                                 "postmaster (no relay in their data path)")
    handed.add_metric([], float(_handed_off))
    fallback = CounterMetricFamily("cygnet_endpoint_options_connections",
                                   "Connections routed by options=endpoint= (TLS terminated)")
    fallback.add_metric([], float(_terminated))
    errors = CounterMetricFamily("cygnet_endpoint_refused_connections",
                                 "Connections the endpoint answered with an error of its own",
                                 labels=["sqlstate"])
    for sqlstate, n in sorted(_refused.items()):
        errors.add_metric([sqlstate], float(n))
    return [gauge("cygnet_endpoint_active_connections",
                  "Connections the C relay is moving bytes for now", [], [((), float(active))]),
            gauge("cygnet_endpoint_options_active_connections",
                  "Connections routed by options=endpoint= relayed now",
                  [], [((), float(_options_active()))]),
            handed, relayed, moved, fallback, errors]
