"""Fleet membership: register with the coordinator, then send heartbeats.

Each heartbeat carries the host's capacity (pools, memory, running clusters,
Postgres versions). A NOT_FOUND answer means the coordinator lost the host
(a new store, say), so the host registers again, and the coordinator rebuilds
its catalog from the host. An unreachable coordinator is retried with a
backoff capped at the heartbeat interval, so a coordinator that comes back
hears from every host within one interval (and fenced primaries lift their
fence as soon); the databases are never affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

import grpc
from grpc import aio

from cygnet import __version__
from cygnet.agent import convert, lease
from cygnet.agent.config import AgentConfig
from cygnet.agent.heartbeat_stream import HeartbeatStream
from cygnet.agent.host import Host
from cygnet.agent.lease import HostLease
from cygnet.api.v1 import coordinator_pb2 as cpb
from cygnet.api.v1 import coordinator_pb2_grpc as cpb_grpc

log = logging.getLogger("cygnet.agent.registration")

CALL_TIMEOUT = 10.0


def memory_bytes(config: AgentConfig) -> int:
    if config.memory_bytes:
        return config.memory_bytes
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def api_address(config: AgentConfig) -> str:
    if config.advertise_api:
        return config.advertise_api
    port = config.listen.rpartition(":")[2]
    return f"{config.advertise_host}:{port}"


def host_id(config: AgentConfig) -> str:
    return config.host_id or socket.gethostname()


async def capacity(config: AgentConfig, host: Host) -> cpb.HostCapacity:
    status = await host.status()
    return cpb.HostCapacity(pools=[convert.pool(p) for p in status.pools],
                            memory_bytes=memory_bytes(config),
                            running_clusters=status.running_clusters,
                            postgres_versions=status.postgres_versions,
                            database_count=status.database_count)


def _channel(config: AgentConfig, address: str = "") -> aio.Channel:
    assert config.coordinator_ca and config.tls_cert and config.tls_key
    creds = grpc.ssl_channel_credentials(config.coordinator_ca.read_bytes(),
                                         config.tls_key.read_bytes(),
                                         config.tls_cert.read_bytes())
    # No BDP pings: a stream of one small message per interval has no bandwidth
    # to tune, and each probe is a ping the coordinator must answer.
    return aio.secure_channel(address or config.coordinator, creds,
                              options=[("grpc.http2.bdp_probe", 0)])


def coordinator_addresses(config: AgentConfig) -> list[str]:
    """`coordinator` may list several coordinators, comma-separated: any of them
    answers (they share one store), so an unreachable one is skipped."""
    return [a.strip() for a in config.coordinator.split(",") if a.strip()]


class Membership:
    def __init__(self, config: AgentConfig, host: Host) -> None:
        self.config = config
        self.host = host
        self.registered = False
        self.interval = 5.0
        # Off once a coordinator answers UNIMPLEMENTED (it predates HeartbeatStream).
        self.streaming = True
        self.stream: HeartbeatStream | None = None
        # The host's lease, as its fenced primaries read it (agent/lease.py).
        self.lease = HostLease(config)

    async def beat(self, stub: cpb_grpc.CoordinatorStub) -> None:
        """One register or heartbeat call."""
        cap = await capacity(self.config, self.host)
        hid = host_id(self.config)
        sent, timeout = self.lease.sending(), self.lease.call_timeout(CALL_TIMEOUT)
        fenced = lease.fenced_databases(self.host)
        if not self.registered:
            req = cpb.RegisterHostRequest(
                host_id=hid, address=api_address(self.config), zone=self.config.zone,
                labels=self.config.labels, capacity=cap,
                max_clusters=self.config.max_clusters, version=__version__)
            resp = await stub.RegisterHost(req, timeout=CALL_TIMEOUT)
            self.registered = True
            log.info("registered with coordinator %s as %s", self.config.coordinator, hid)
        elif self.streaming and self.stream is not None:
            resp = await self.stream.beat(cpb.HeartbeatRequest(
                host_id=hid, capacity=cap, fenced_databases=fenced), timeout)
        else:
            resp = await stub.Heartbeat(cpb.HeartbeatRequest(
                host_id=hid, capacity=cap, fenced_databases=fenced), timeout=timeout)
        self.lease.renewed(sent, resp.host_lease_ttl_seconds)
        self.interval = self.lease.interval(resp.heartbeat_interval_seconds or self.interval)
        if isinstance(resp, cpb.HeartbeatResponse) and resp.primary_databases:
            await lease.lift_fences(self.host, list(resp.primary_databases))

    async def run(self, stop: asyncio.Event) -> None:
        addresses = coordinator_addresses(self.config)
        turn = 0
        while not stop.is_set():
            # One coordinator until it stops answering, then the next in the list.
            await self._run_with(addresses[turn % len(addresses)], stop)
            turn += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    async def _run_with(self, address: str, stop: asyncio.Event) -> None:
        self.streaming = True  # each coordinator is asked for the stream afresh
        async with _channel(self.config, address) as channel:
            stub = cpb_grpc.CoordinatorStub(channel)  # type: ignore[no-untyped-call]
            self.stream = HeartbeatStream(stub, address)
            try:
                await self._beat_until_moved(address, stub, stop)
            finally:
                if self.stream is not None:
                    self.stream.close()
                    self.stream = None

    async def _beat_until_moved(self, address: str, stub: cpb_grpc.CoordinatorStub,
                                stop: asyncio.Event) -> None:
        """Beats on `stub` until stopped, or until this coordinator stops answering and
        another one is listed."""
        backoff = 0.5
        while not stop.is_set():
            try:
                await self.beat(stub)
                wait, backoff = self.interval, 0.5
            except aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED and self.streaming:
                    log.info("coordinator %s has no heartbeat stream: unary heartbeats",
                             address)
                    self.streaming = False
                    continue
                if exc.code() == grpc.StatusCode.NOT_FOUND and self.registered:
                    log.warning("the coordinator forgot this host: registering again")
                    self.registered = False
                    continue
                log.warning("coordinator %s: %s: %s", address,
                            exc.code().name, exc.details())
                if (exc.code() in (grpc.StatusCode.UNAVAILABLE,
                                   grpc.StatusCode.DEADLINE_EXCEEDED,
                                   grpc.StatusCode.CANCELLED)
                        and "," in self.config.coordinator):
                    return
                # Never slower than a healthy host's beat: a longer wait would only
                # keep this host unavailable (and its primaries fenced) after the
                # coordinator is back, and spares it no load it would not get anyway.
                wait, backoff = backoff, min(backoff * 2, max(self.interval, 0.5))
            except Exception:
                log.exception("heartbeat failed")
                wait = backoff
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
