"""Heartbeat load: simulated hosts speaking RegisterHost and heartbeats to one coordinator.

Prints JSON. See "## Heartbeat load" in benchmarks/README.md.

    .venv/bin/python -m benchmarks.bench_heartbeats                    # 1,000 / 5,000 / 10,000
    .venv/bin/python -m benchmarks.bench_heartbeats --hosts 1000 --store postgres
    .venv/bin/python -m benchmarks.bench_heartbeats --mode unary --no-baseline

`--mode stream` (the default, what cygnetd does) sends each host's heartbeats
on one long-lived HeartbeatStream; `--mode unary` makes one Heartbeat call
each (older agents). Unless `--no-baseline`, the other mode is measured in the
same run at each fleet size, as the baseline.

Every simulated host has a host certificate of its own (host/NAME, signed by
the benchmark's fleet CA), so the coordinator checks each call as it would a
real host's; the certificates are made once and kept for the larger runs.
Each host opens its own mutual-TLS channel, registers, then beats every
`--interval` seconds (10 s; the coordinator is told the same), starting at a
random offset. The coordinator's CPU is read from /proc/PID/stat (utime +
stime) over the measuring window, its memory from /proc/PID/statm; the load
generator runs on the same 2 cores and its own CPU is reported beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from benchmarks.bench_placement import percentiles, postgres_dsn
from benchmarks.common import emit, log
from benchmarks.coordinator_rig import Proc, coordinator, stub
from cygnet import pki
from cygnet.api.v1 import agent_pb2 as apb
from cygnet.api.v1 import coordinator_pb2 as cpb
from tests.e2e.fleet import Coordinator

GB = 1024**3
MODES = ("stream", "unary")
CHANNEL_OPTIONS = [("grpc.http2.bdp_probe", 0)]


def certificates(directory: Path, hosts: int) -> None:
    """host/sim-NNNNN certificates for the first `hosts` hosts (made once)."""
    started = time.monotonic()
    made = 0
    for i in range(hosts):
        if not (directory / f"sim-{i:05d}.pem").exists():
            pki.issue(directory, "host", f"sim-{i:05d}", [])
            made += 1
    if made:
        log(f"made {made} host certificates in {time.monotonic() - started:.1f}s")


def capacity(i: int) -> cpb.HostCapacity:
    return cpb.HostCapacity(
        pools=[apb.Pool(name="tank", size_bytes=4096 * GB, free_bytes=3000 * GB,
                        used_bytes=1096 * GB)],
        memory_bytes=128 * GB, running_clusters=i % 7, postgres_versions=["15"],
        database_count=i % 7)


class SimHost:
    def __init__(self, c: Coordinator, address: str, i: int) -> None:
        self.id = f"sim-{i:05d}"
        cert, key = c.pki.dir / f"{self.id}.pem", c.pki.dir / f"{self.id}.key"
        creds = grpc.ssl_channel_credentials(c.pki.ca.read_bytes(), key.read_bytes(),
                                             cert.read_bytes())
        self.channel = aio.secure_channel(address, creds, options=CHANNEL_OPTIONS)
        self.stub = stub(self.channel)
        self.cap = capacity(i)
        self.call: Any = None  # the HeartbeatStream, in stream mode

    async def register(self) -> None:
        await self.stub.RegisterHost(cpb.RegisterHostRequest(
            host_id=self.id, address=f"unix:/nonexistent/{self.id}", zone="z1",
            capacity=self.cap, version="bench"), timeout=60)

    async def beat(self, mode: str) -> float:
        started = time.perf_counter()
        req = cpb.HeartbeatRequest(host_id=self.id, capacity=self.cap)
        if mode == "unary":
            await self.stub.Heartbeat(req, timeout=30)
        else:
            if self.call is None:
                self.call = self.stub.HeartbeatStream()
            await self.call.write(req)
            if await self.call.read() is aio.EOF:
                self.call = None
                raise RuntimeError("the coordinator ended the stream")
        return time.perf_counter() - started

    async def close(self) -> None:
        if self.call is not None:
            await self.call.done_writing()
            self.call = None
        await self.channel.close()


async def drive(c: Coordinator, address: str, hosts: int, interval: float, warmup: float,
                window: float, mode: str) -> dict[str, Any]:
    assert c.proc is not None
    proc, me = Proc(c.proc.pid), Proc(os.getpid())
    sims = [SimHost(c, address, i) for i in range(hosts)]
    sem = asyncio.Semaphore(100)  # registrations: a fleet booting, 100 at a time

    async def register(s: SimHost) -> None:
        async with sem:
            await s.register()

    started = time.monotonic()
    await asyncio.gather(*[register(s) for s in sims])
    log(f"{hosts} hosts registered in {time.monotonic() - started:.1f}s")
    samples: list[float] = []
    errors: dict[str, int] = {}
    examples: list[str] = []
    measuring = asyncio.Event()
    end = time.monotonic() + warmup + window

    async def host(s: SimHost) -> None:
        await asyncio.sleep(random.uniform(0, interval))
        while time.monotonic() < end:
            try:
                took = await s.beat(mode)
                if measuring.is_set():
                    samples.append(took)
            except aio.AioRpcError as exc:
                errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                example = f"{exc.code().name}: {exc.details()}"
                if len(examples) < 5 and example not in examples:
                    examples.append(example)
                s.call = None
            await asyncio.sleep(interval)

    tasks = [asyncio.create_task(host(s)) for s in sims]
    await asyncio.sleep(warmup)
    measuring.set()
    cpu0, mine0, t0 = proc.cpu(), me.cpu(), time.monotonic()
    await asyncio.sleep(window)
    cpu1, mine1, t1 = proc.cpu(), me.cpu(), time.monotonic()
    rss = proc.rss_mb()
    await asyncio.gather(*tasks)
    for s in sims:
        await s.close()
    return {"mode": mode, "hosts": hosts, "interval_s": interval, "window_s": round(t1 - t0, 1),
            "heartbeats": len(samples), "per_second": round(len(samples) / (t1 - t0), 1),
            "errors": errors, "error_examples": examples,
            "coordinator_cpu_core": round((cpu1 - cpu0) / (t1 - t0), 3),
            "coordinator_rss_mb": rss,
            "generator_cpu_core": round((mine1 - mine0) / (t1 - t0), 3),
            "generator_rss_mb": me.rss_mb(),
            "latency_s": percentiles(samples) if samples else {}}


def run_one(base: Path, url: str, hosts: int, interval: float, warmup: float,
            window: float, mode: str = "stream") -> dict[str, Any]:
    with coordinator(base, url, "--heartbeat-interval", str(interval)) as (c, address):
        certificates(c.pki.dir, hosts)
        return asyncio.run(drive(c, address, hosts, interval, warmup, window, mode))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--hosts", type=int, action="append",
                   help="fleet size (repeatable; default 1000, 5000, 10000)")
    p.add_argument("--interval", type=float, default=10.0)
    p.add_argument("--window", type=float, default=30.0)
    p.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--mode", choices=MODES, default="stream",
                   help="heartbeats on one stream per host, or one unary call each")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="do not also measure the other mode")
    args = p.parse_args()
    modes = [args.mode] + [m for m in MODES if m != args.mode and args.baseline]
    result: dict[str, Any] = {"benchmark": "heartbeats", "store": args.store, "mode": args.mode,
                              "load_average": os.getloadavg()[0], "runs": []}
    with tempfile.TemporaryDirectory(prefix="cygnet-hb-") as tmp:
        base = Path(tmp)
        for n in args.hosts or [1000, 5000, 10000]:
            for mode in modes:
                got = run_store(base, args.store, n, args.interval, args.window, mode)
                got["load_average"] = os.getloadavg()[0]
                log(f"{n} hosts, {mode}: {got}")
                result["runs"].append(got)
    result["run_id"] = secrets.token_hex(3)
    emit("heartbeats", result)


def run_store(base: Path, store: str, hosts: int, interval: float, window: float,
              mode: str) -> dict[str, Any]:
    if store == "postgres":
        with postgres_dsn() as dsn:
            return run_one(base, dsn, hosts, interval, interval * 1.5, window, mode)
    url = f"sqlite:///{base}/hb-{hosts}-{mode}.db"
    return run_one(base, url, hosts, interval, interval * 1.5, window, mode)

if __name__ == "__main__":
    main()
