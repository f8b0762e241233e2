"""The endpoint's Prometheus families."""

from __future__ import annotations

from cygnet.endpoint import metrics
from cygnet.endpoint.relay_link import ThreadRelay


def _samples() -> dict[tuple[str, tuple[str, ...]], float]:
    return {(s.name, tuple(s.labels.values())): s.value
            for family in metrics.metrics() for s in family.samples}


def test_nothing_until_the_endpoint_runs_then_every_family() -> None:
    metrics.use_relay(None)
    assert metrics.metrics() == []
    metrics.use_relay(ThreadRelay())
    before = _samples().get(("cygnet_endpoint_refused_connections_total", ("3D000",)), 0.0)
    handed = _samples().get(("cygnet_endpoint_handed_off_connections_total", ()), 0.0)
    metrics.refused("3D000")
    metrics.terminated()
    metrics.handed_off()
    got = _samples()
    assert got[("cygnet_endpoint_handed_off_connections_total", ())] == handed + 1
    assert got[("cygnet_endpoint_refused_connections_total", ("3D000",))] == before + 1
    assert ("cygnet_endpoint_active_connections", ()) in got
    assert ("cygnet_endpoint_relayed_connections_total", ()) in got
    assert ("cygnet_endpoint_options_connections_total", ()) in got
    assert got[("cygnet_endpoint_options_active_connections", ())] == 0
    metrics.use_relay(ThreadRelay(), lambda: 3)
    assert _samples()[("cygnet_endpoint_options_active_connections", ())] == 3
    assert {labels for name, labels in got if name == "cygnet_endpoint_relayed_bytes_total"} \
        == {("client_to_branch",), ("branch_to_client",)}
    metrics.use_relay(None)  # the endpoint stops: nothing again
    assert metrics.metrics() == []
