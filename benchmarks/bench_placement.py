"""Placement: latency with a big fleet in the store, throughput, and balance quality.

Prints JSON. See "## Placement" in benchmarks/README.md.

    .venv/bin/python -m benchmarks.bench_placement            # 10,000 hosts, 100,000 databases
    .venv/bin/python -m benchmarks.bench_placement --small    # 1,000 hosts, 10,000 (smoke run)

Hosts are simulated (rows in the store, as registrations would write them);
everything else is the coordinator's own code: the store's placement
transaction with scoring, on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import emit, log, summary
from cygnet.coordinator import scoring
from cygnet.coordinator.config import CoordinatorConfig
from cygnet.coordinator.convert import candidate
from cygnet.coordinator.models import (
    GB_UNIT,
    Capacity,
    CatalogEntry,
    Constraints,
    Demand,
    PoolInfo,
    Registration,
)
from cygnet.coordinator.remote import AgentClients
from cygnet.coordinator.router import Router
from cygnet.coordinator.store.postgres import PostgresStore
from cygnet.coordinator.store.sql import SqlStore
from cygnet.coordinator.store.sqlite import SqliteStore

SIZES = ["nano"] * 4 + ["small"] * 4 + ["medium"] * 2 + ["large"]


def fleet(hosts: int, seed: int = 7) -> Iterator[tuple[Registration, int, int]]:
    rng = random.Random(seed)
    for i in range(hosts):
        memory = rng.choice([64, 128, 256]) * GB_UNIT
        pool = rng.choice([2, 4, 8]) * 1024 * GB_UNIT
        cap = Capacity((PoolInfo("tank", pool, int(pool * rng.uniform(0.6, 0.95))),), memory, 0,
                       ("15", "16"), 0)
        reg = Registration(f"host-{i:05d}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:7433",
                           f"z{i % 4}", {"rack": f"r{i % 50}"}, cap)
        yield reg, int(memory * 0.75), 400


def catalog(hosts: int, databases: int, seed: int = 8) -> list[CatalogEntry]:
    rng = random.Random(seed)
    out = []
    for i in range(databases):
        d = Demand.for_size(rng.choice(SIZES[:4]))  # existing load: nano and small
        out.append(CatalogEntry(f"db-{i:06d}", f"db-{i:06d}", f"host-{rng.randrange(hosts):05d}",
                                d.size_class, "15", "tank", d.memory_bytes, d.disk_bytes,
                                created_at=time.time()))
    return out


def router(store: SqlStore) -> Router:
    # Placement never dials a host; the clients are there for the type only.
    return Router(store, CoordinatorConfig(), AgentClients(b"", b"", b""))


async def latency(store: SqlStore, n: int) -> dict[str, float]:
    r, samples = router(store), []
    for i in range(n):
        started = time.perf_counter()
        await r.place(SIZES[i % len(SIZES)], "", Constraints(), False)
        samples.append(time.perf_counter() - started)
    ordered = sorted(samples)
    out = summary(samples)
    out["p99"] = round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 4)
    return out


async def throughput(store: SqlStore, clients: int, seconds: float) -> dict[str, Any]:
    r, done = router(store), [0]
    deadline = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < deadline:
            await r.place("nano", "", Constraints(), False)
            done[0] += 1

    started = time.monotonic()
    await asyncio.gather(*[client() for _ in range(clients)])
    elapsed = time.monotonic() - started
    return {"clients": clients, "placements": done[0],
            "per_second": round(done[0] / elapsed, 1)}


def measure(store: SqlStore, hosts: int, databases: int, n: int) -> dict[str, Any]:
    started = time.monotonic()
    store.load(fleet(hosts), catalog(hosts, databases))
    log(f"loaded {hosts} hosts, {databases} databases in {time.monotonic() - started:.1f}s")
    lat = asyncio.run(latency(store, n))
    log(f"latency {lat}")
    thr = asyncio.run(throughput(store, 50, 10.0))
    log(f"throughput {thr}")
    return {"latency_s": lat, "throughput": thr}


def balance(directory: Path, hosts: int) -> dict[str, Any]:
    """Fills a mixed fleet to 80% of its memory budget; max/mean of host utilisation."""
    store = SqliteStore(directory / "balance.db")
    store.load(fleet(hosts, seed=11), [])
    budget = sum(h.memory_budget for h in store.list_hosts())
    rng, reserved, placed = random.Random(12), 0, 0
    r = router(store)
    while reserved < 0.8 * budget:
        size = rng.choice(SIZES)
        asyncio.run(r.place(size, "", Constraints(), False))
        reserved += Demand.for_size(size).memory_bytes
        placed += 1
    utils = [scoring.utilisation(candidate(h)) for h in store.list_hosts()]
    store.close()
    mean = sum(utils) / len(utils)
    return {"hosts": hosts, "placed": placed, "fleet_memory_fill": round(reserved / budget, 3),
            "mean_utilisation": round(mean, 4), "max_utilisation": round(max(utils), 4),
            "min_utilisation": round(min(utils), 4), "max_over_mean": round(max(utils) / mean, 4)}


@contextmanager
def postgres_dsn() -> Iterator[str]:
    """A throwaway PostgreSQL server (the tests' helpers), removed afterwards."""
    from cygnet.postgres.initdb import init_cluster
    from cygnet.postgres.layout import ClusterLayout
    from cygnet.postgres.versions import resolve_version
    from tests.integration.coordinator_helpers import PgServer
    from tests.integration.pg_helpers import PgEnv, make_base

    _, bindir = resolve_version("")
    tpl = make_base("/var/tmp/cygnet-pgtpl-")
    layout = ClusterLayout(tpl)
    asyncio.run(init_cluster(bindir, layout.pgdata, layout.log_file))
    env = PgEnv(make_base("/var/tmp/cygnet-pgtest-"), make_base("/tmp/cygs-"), layout.pgdata,
                bindir)
    try:
        yield PgServer(env).new_database()
    finally:
        env.cleanup()
        for path in (env.base, env.socket_base, tpl):
            shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--small", action="store_true")
    p.add_argument("--balance-hosts", type=int, default=300,
                   help="fleet size of the balance run (each host takes ~70 placements)")
    p.add_argument("--balance-only", action="store_true")
    args = p.parse_args()
    hosts, databases, n = (1000, 10_000, 200) if args.small else (10_000, 100_000, 1000)
    result: dict[str, Any] = {"benchmark": "placement", "hosts": hosts, "databases": databases}
    with tempfile.TemporaryDirectory(prefix="cygnet-bench-") as tmp:
        if not args.balance_only:
            sqlite = SqliteStore(Path(tmp) / "coordinator.db")
            result["sqlite"] = measure(sqlite, hosts, databases, n)
            sqlite.close()
            with postgres_dsn() as dsn:
                pg = PostgresStore(dsn, pool_size=8)
                result["postgres"] = measure(pg, hosts, databases, n)
                pg.close()
        result["balance"] = balance(Path(tmp), 100 if args.small else args.balance_hosts)
    result["run_id"] = secrets.token_hex(3)
    name = "placement_small" if args.small else "placement"
    emit(name + ("_balance" if args.balance_only else ""), result)


if __name__ == "__main__":
    main()
