"""Failover time and switchover downtime, client-side, on three hosts in namespaces.

Prints JSON. See "## Failover and switchover" in benchmarks/README.md.

    .venv/bin/python -m benchmarks.bench_ha             # default settings (host lease TTL 6 s)
    .venv/bin/python -m benchmarks.bench_ha --small     # TTL 3 s, as tests/e2e/test_failover.py

One database with two synchronous replicas (ANY 1 of two). A ledger client
writes one commit at a time through a libpq multi-host string over every
host's endpoint with target_session_attrs=read-write (docs/ha.md). First the
planned switchover (`PromoteReplica`), the baseline of the same run: its
downtime as the coordinator reports it and as the client sees it (the longest
gap between two acknowledged commits). Then host loss: the primary's cygnetd
and postmasters get SIGKILL and its link goes down; the failover time is from
the kill to the first commit acknowledged after it. Acknowledged commits lost
are counted from the ledger in both cases.
"""

from __future__ import annotations

import argparse
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import emit, log
from cygnet.agent import lease
from cygnet.api.v1 import coordinator_pb2 as cpb
from tests.e2e.fleet import HostFleet, enter_netns, host_fleet, wait_for
from tests.e2e.test_failover import _kill_host, _primary, _rows, ledger_on


def _gap(acked: list[tuple[int, int]], after_ns: int) -> float:
    times = [t for _, t in acked]
    gaps = [b - a for a, b in itertools.pairwise(times) if b > after_ns]
    return max(gaps, default=0) / 1e9


def run(f: HostFleet, ttl: float) -> dict[str, Any]:
    client = ThreadPoolExecutor(2, initializer=enter_netns, initargs=(f.lan.ns("client"),))
    with f.coordinator.stub() as c:
        made, uri, ledger, writer = ledger_on(f, "bench", client)
        first = made.placement.host_id
        wait_for(lambda: len(ledger.acked) > 100, 60, "commits before the switchover")

        log("switchover")
        before = lease.now_ns()
        target = sorted(set(f.daemons) - {first})[0]
        sw = c.PromoteReplica(cpb.FleetPromoteReplicaRequest(
            database="bench", host_id=target), timeout=300)
        done = lease.now_ns()
        wait_for(lambda: len([1 for _, t in ledger.acked if t > done]) > 50, 60,
                 "commits after the switchover")
    switchover = {"server_downtime_s": sw.downtime.seconds + sw.downtime.nanos / 1e9,
                  "client_gap_s": round(_gap(ledger.acked, before), 3)}

    log("host loss")
    primary = _primary(f, "bench")
    _kill_host(f.daemons[primary], f.lan.ns(primary))
    # From the moment everything on the host is dead (a commit may be acknowledged
    # while the kill is under way).
    killed = lease.now_ns()
    wait_for(lambda: ledger.first_after(killed) is not None, 120, "writes after the failover")
    wait_for(lambda: len([1 for _, t in ledger.acked if t > killed]) > 20, 60, "more writes")
    ledger.stop.set()
    writer.result(60)
    lost = {s for s, _ in ledger.acked} - _rows(uri, client)
    back = ((ledger.first_after(killed) or killed) - killed) / 1e9
    return {"host_lease_ttl_s": ttl, "switchover": switchover,
            "failover": {"writes_again_s": round(back, 3), "from": primary,
                         "to": _primary(f, "bench")},
            "acknowledged": len(ledger.acked), "acknowledged_lost": len(lost)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="host lease TTL 3 s")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    ttl = 3.0 if args.small else 6.0
    with host_fleet(port_base=59900, coordinator_args=("--host-lease-ttl", str(ttl))) as f:
        started = time.monotonic()
        result = run(f, ttl)
        result["seconds"] = round(time.monotonic() - started, 1)
    emit("ha_small" if args.small else "ha", result, args.out)


if __name__ == "__main__":
    main()
