"""Placement through the gRPC API: latency, throughput and balance, both stores.

Prints JSON. See "## Placement" in benchmarks/README.md.

    .venv/bin/python -m benchmarks.bench_placement            # 10,000 hosts, 100,000 databases
    .venv/bin/python -m benchmarks.bench_placement --small    # seconds: a smoke run

A real cygnet-coordinator process serves mutual TLS on a TCP port; the load
generator is this process (grpc.aio, one coroutine per client) on the same
2 cores. Every placement reserves, and is answered once its reservation is
committed. Each store is measured twice in the same run: the leader's index
with group commit ("index"), and the store's placement transaction a
follower uses, which was every coordinator's path before ("store path").
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

import grpc

from benchmarks.common import emit, log, summary
from benchmarks.coordinator_rig import (
    Proc,
    channel,
    coordinator,
    fleet,
    free_lead,
    hold_lead_elsewhere,
    mark_alive,
    stub,
)
from cygnet.api.v1 import coordinator_pb2 as cpb
from cygnet.coordinator import scoring
from cygnet.coordinator.convert import candidate
from cygnet.coordinator.models import CatalogEntry, Demand
from cygnet.coordinator.store import open_store

SIZES = ["nano"] * 4 + ["small"] * 4 + ["medium"] * 2 + ["large"]


def catalog(hosts: int, databases: int, seed: int = 8) -> list[CatalogEntry]:
    rng = random.Random(seed)
    out = []
    for i in range(databases):
        d = Demand.for_size(rng.choice(SIZES[:4]))  # existing load: nano and small
        out.append(CatalogEntry(f"db-{i:06d}", f"db-{i:06d}", f"host-{rng.randrange(hosts):05d}",
                                d.size_class, "15", "tank", d.memory_bytes, d.disk_bytes,
                                created_at=time.time()))
    return out


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    out = summary(samples)
    out["p99"] = round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 5)
    return out


async def _place(s: Any, size: str) -> float:
    started = time.perf_counter()
    await s.PlaceDatabase(cpb.PlaceDatabaseRequest(size_class=size,
                                                   request_id="b-" + secrets.token_hex(8)),
                          timeout=60)
    return time.perf_counter() - started


async def latency(address: str, c: Any, n: int) -> dict[str, float]:
    """`n` sequential placements from one client: the latency of one placement."""
    async with channel(c, address) as ch:
        s = stub(ch)
        for _ in range(20):  # the channel and TLS session are set up
            await _place(s, "nano")
        return percentiles([await _place(s, SIZES[i % len(SIZES)]) for i in range(n)])


async def throughput(address: str, c: Any, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` concurrent clients placing nano databases, each on its own channel."""
    samples: list[float] = []
    refused: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def client(s: Any) -> None:
        while time.monotonic() < deadline:
            try:
                samples.append(await _place(s, "nano"))
            except grpc.aio.AioRpcError as exc:
                refused[exc.code().name] = refused.get(exc.code().name, 0) + 1

    chans = [channel(c, address) for _ in range(clients)]
    try:
        stubs = [stub(ch) for ch in chans]
        await asyncio.gather(*[_place(s, "nano") for s in stubs])  # connected
        started = time.monotonic()
        await asyncio.gather(*[client(s) for s in stubs])
        elapsed = time.monotonic() - started
    finally:
        for ch in chans:
            await ch.close()
    return {"clients": clients, "placements": len(samples), "refused": refused,
            "per_second": round(len(samples) / elapsed, 1),
            "latency_s": percentiles(samples) if samples else {}}


def measure(base: Path, url: str, mode: str, n: int, clients: int, seconds: float
            ) -> dict[str, Any]:
    """One coordinator process; `mode` "index" (it leads) or "store path" (a follower)."""
    if mode == "index":
        free_lead(url)
    else:
        hold_lead_elsewhere(url)
    with coordinator(base, url, wait_index=mode == "index") as (c, address):
        assert c.proc is not None
        proc = Proc(c.proc.pid)
        cpu0 = proc.cpu()
        lat = asyncio.run(latency(address, c, n))
        log(f"{mode}: latency {lat}")
        thr = asyncio.run(throughput(address, c, clients, seconds))
        log(f"{mode}: throughput {thr}")
        used = proc.cpu() - cpu0
        return {"latency_s": lat, "throughput": thr, "coordinator_cpu_s": round(used, 1),
                "coordinator_rss_mb": proc.rss_mb()}


def measure_store(base: Path, url: str, hosts: int, databases: int, n: int, clients: int,
                  seconds: float, baseline_seconds: float) -> dict[str, Any]:
    store = open_store(url)
    started = time.monotonic()
    store.load(fleet(hosts), catalog(hosts, databases))
    store.close()
    mark_alive(url)
    log(f"loaded {hosts} hosts, {databases} databases in {time.monotonic() - started:.1f}s")
    out = {"index": measure(base, url, "index", n, clients, seconds)}
    if baseline_seconds > 0:
        mark_alive(url)
        out["store path"] = measure(base, url, "store path", max(50, n // 10), clients,
                                    baseline_seconds)
    return out


def balance(base: Path, hosts: int, clients: int) -> dict[str, Any]:
    """Fills a fresh mixed fleet to 80% of its memory budget through the API;
    max/mean of the hosts' utilisation (their bottleneck resource)."""
    url = f"sqlite:///{base}/balance.db"
    store = open_store(url)
    store.load(fleet(hosts, seed=11), [])
    budget = sum(h.memory_budget for h in store.list_hosts())
    store.close()
    mark_alive(url)
    rng = random.Random(12)
    sizes: list[str] = []
    reserved = 0
    while reserved < 0.8 * budget:
        sizes.append(rng.choice(SIZES))
        reserved += Demand.for_size(sizes[-1]).memory_bytes

    async def fill(address: str, c: Any) -> None:
        async with channel(c, address) as ch:
            s = stub(ch)
            todo = iter(sizes)

            async def client() -> None:
                for size in todo:
                    await _place(s, size)

            await asyncio.gather(*[client() for _ in range(clients)])

    with coordinator(base, url) as (c, address):
        asyncio.run(fill(address, c))
    store = open_store(url)
    utils = [scoring.utilisation(candidate(h)) for h in store.list_hosts()]
    store.close()
    mean = sum(utils) / len(utils)
    return {"hosts": hosts, "placed": len(sizes), "fleet_memory_fill": round(reserved / budget, 3),
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


def run(small: bool, balance_hosts: int, stores: list[str]) -> dict[str, Any]:
    hosts, databases, n, seconds, baseline = ((200, 2_000, 50, 1.0, 1.0) if small
                                              else (10_000, 100_000, 1000, 10.0, 10.0))
    clients = 10 if small else 50
    result: dict[str, Any] = {"benchmark": "placement", "hosts": hosts, "databases": databases}
    with tempfile.TemporaryDirectory(prefix="cygnet-bench-") as tmp:
        base = Path(tmp)
        if "sqlite" in stores:
            result["sqlite"] = measure_store(base, f"sqlite:///{base}/coordinator.db", hosts,
                                             databases, n, clients, seconds, baseline)
        if "postgres" in stores:
            with postgres_dsn() as dsn:
                result["postgres"] = measure_store(base, dsn, hosts, databases, n, clients,
                                                   seconds, baseline)
        if balance_hosts:
            result["balance"] = balance(base, balance_hosts, clients)
    result["run_id"] = secrets.token_hex(3)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--small", action="store_true")
    p.add_argument("--balance-hosts", type=int, default=300,
                   help="fleet size of the balance run (each host takes ~70 placements); 0: none")
    p.add_argument("--store", action="append", choices=["sqlite", "postgres"],
                   help="only this store (repeatable; default both)")
    args = p.parse_args()
    result = run(args.small, 30 if args.small else args.balance_hosts,
                 args.store or ["sqlite", "postgres"])
    emit("placement_small" if args.small else "placement", result)


if __name__ == "__main__":
    main()
