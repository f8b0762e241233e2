"""Where a placement's time goes, through the gRPC API on a PostgreSQL store.

    .venv/bin/python -m benchmarks.placement_breakdown [--hosts 1000] [--n 300]

Sequential calls from one client to one leading coordinator, each kind
measured in the same run: a health check (gRPC, TLS, no interceptor work), a
dry-run placement (authentication, validation, the index's choice, no
store), a placement (the same plus its group commit: the reservation
durable before the reply), and the store's batch alone, in-process (one
reservation per transaction). The differences are the parts. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.bench_placement import catalog, percentiles, postgres_dsn
from benchmarks.common import emit
from benchmarks.coordinator_rig import channel, coordinator, fleet, free_lead, mark_alive, stub
from cygnet.api.v1 import coordinator_pb2 as cpb
from cygnet.coordinator.models import CatalogEntry, Demand
from cygnet.coordinator.store import open_store, reserve
from cygnet.coordinator.store.sql import entry_values


async def timed(call: Any, n: int) -> dict[str, float]:
    for _ in range(20):
        await call()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


async def over_grpc(c: Any, address: str, n: int) -> dict[str, Any]:
    async with channel(c, address) as ch:
        s, health = stub(ch), health_pb2_grpc.HealthStub(ch)
        return {
            "health_check": await timed(lambda: health.Check(health_pb2.HealthCheckRequest()), n),
            "place_dry_run": await timed(lambda: s.PlaceDatabase(cpb.PlaceDatabaseRequest(
                size_class="nano", dry_run=True)), n),
            "place": await timed(lambda: s.PlaceDatabase(cpb.PlaceDatabaseRequest(
                size_class="nano", request_id="b-" + secrets.token_hex(8))), n)}


def store_alone(url: str, n: int) -> dict[str, float]:
    store = open_store(url)
    epoch = store.hold_lease("breakdown", 0, 300)
    d = Demand.for_size("nano")
    samples = []
    try:
        for i in range(n):
            name = "s-" + secrets.token_hex(6)
            e = CatalogEntry(name, name, f"host-{i % 100:05d}", "nano", "15", "tank",
                             d.memory_bytes, d.disk_bytes, state="reserved",
                             request_id="r" + name, expires_at=time.time() + 300,
                             created_at=time.time())
            item = reserve.Item(tuple(entry_values(e)), e.host_id, d.memory_bytes, d.disk_bytes)
            started = time.perf_counter()
            store.commit_batch(epoch, [item])
            samples.append(time.perf_counter() - started)
        store.give_up_lease("breakdown", epoch)
    finally:
        store.close()
    return percentiles(samples)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--n", type=int, default=300)
    args = p.parse_args()
    result: dict[str, Any] = {"benchmark": "placement_breakdown", "hosts": args.hosts}
    with tempfile.TemporaryDirectory(prefix="cygnet-bd-") as tmp, postgres_dsn() as url:
        store = open_store(url)
        store.load(fleet(args.hosts), catalog(args.hosts, args.hosts * 10))
        store.close()
        mark_alive(url)
        result["store_batch_in_process"] = store_alone(url, args.n)
        free_lead(url)
        with coordinator(Path(tmp), url) as (c, address):
            result.update(asyncio.run(over_grpc(c, address, args.n)))
    result["run_id"] = secrets.token_hex(3)
    emit("placement_breakdown", result)


if __name__ == "__main__":
    main()
