"""Coordinator failover under placement load: kill -9 of the leader, measured.

Prints JSON. See "## Coordinator failover" in benchmarks/README.md.

    .venv/bin/python -m benchmarks.bench_failover                # 3 coordinators, 3 kills
    .venv/bin/python -m benchmarks.bench_failover --small

Three cygnet-coordinator processes share a throwaway PostgreSQL server with a
simulated fleet. Client threads place with request ids, each holding the list
of coordinator addresses and moving on when one stops answering (a retry
keeps its request id). The leader is killed with SIGKILL, then restarted as
a follower, `--kills` times. Per kill: the time until another coordinator
holds the lease, and the longest gap between two answered placements. At the
end every client's ledger is compared with the store: no placement lost,
none duplicated.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import secrets
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_placement import postgres_dsn
from benchmarks.common import emit, log
from tests.integration.coordinator_helpers import (
    LedgerClient,
    coordinators,
    placing,
    reservations,
    simulated_hosts,
    wait_leader,
)


def gap_around(clients: list[LedgerClient], at: float) -> float:
    """The longest pause in answered placements (all clients) in the 10 s after `at`."""
    times = sorted(t for c in clients for t in c.answered if at - 1 <= t <= at + 10)
    if len(times) < 2:
        return float("nan")
    return max(b - a for a, b in itertools.pairwise(times))


def run(base: Path, dsn: str, hosts: int, n_clients: int, kills: int, ttl: float
        ) -> dict[str, Any]:
    simulated_hosts(dsn, hosts, max_clusters=100_000, memory_gb=100_000)
    procs = coordinators(base, dsn, 3, "--lease-ttl", str(ttl))
    takeovers, gaps = [], []
    with contextlib.ExitStack() as stack:
        for c in procs:
            stack.callback(c.stop)
        stubs = [stack.enter_context(c.stub()) for c in procs]
        clients = [LedgerClient(stubs, f"f{i}") for i in range(n_clients)]
        with placing(clients):
            for _ in range(kills):
                time.sleep(2.0)
                old = wait_leader(dsn, 30)
                victim = next(c for c in procs if c.proc is not None and c.proc.pid == old)
                os.kill(old, signal.SIGKILL)
                killed = time.monotonic()
                wait_leader(dsn, 60, other_than=old)
                takeovers.append(time.monotonic() - killed)
                time.sleep(3.0)
                gaps.append(gap_around(clients, killed))
                log(f"kill -9 of {old}: new leader after {takeovers[-1]:.2f}s, "
                    f"longest placement gap {gaps[-1]:.2f}s")
                victim.start()  # back, as a follower
    rows = reservations(dsn)
    ledger = {rid: res for c in clients for rid, res in c.ledger.items()}
    stored = {rid: res for res, _, rid in rows}
    return {"hosts": hosts, "clients": n_clients, "lease_ttl_s": ttl, "kills": kills,
            "takeover_s": [round(t, 2) for t in takeovers],
            "takeover_max_s": round(max(takeovers), 2),
            "placement_gap_s": [round(g, 2) for g in gaps],
            "placements": len(ledger), "client_moves": sum(c.moves for c in clients),
            "lost": len(set(ledger) - set(stored)),
            "unknown_to_clients": len(set(stored) - set(ledger)),
            "duplicated": len(rows) - len(stored),
            "mismatched": sum(1 for rid, res in ledger.items() if stored.get(rid) != res),
            "median_takeover_s": round(statistics.median(takeovers), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--small", action="store_true")
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--lease-ttl", type=float, default=3.0)
    args = p.parse_args()
    hosts, kills = (50, 1) if args.small else (args.hosts, args.kills)
    with tempfile.TemporaryDirectory(prefix="cygnet-failover-") as tmp, postgres_dsn() as dsn:
        result = run(Path(tmp), dsn, hosts, 4 if args.small else 8, kills, args.lease_ttl)
    result["run_id"] = secrets.token_hex(3)
    emit("failover_small" if args.small else "failover", result)


if __name__ == "__main__":
    main()
