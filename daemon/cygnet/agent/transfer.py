"""ZFS streams from agent to agent, over mutual TLS with the hosts' fleet certificates.

The receiving agent pulls: it calls `SendSnapshot` on the sending agent with
its own host certificate, and pipes the chunks into `zfs receive`. The stream
never passes through the coordinator, and only `host/...` certificates may
ask for one (rpc/roles.py, Kind.TRANSFER). Replicas seed with it (a full
stream: each host's main is a clone of that host's own template, which the
receiver does not have), and incremental rounds (`base_snapshot`) carry a
later snapshot of a dataset the receiver already holds. zfs-fuse has no
resume tokens, so a stream that breaks is discarded whole (`zfs receive`
applies nothing of a partial stream) and the round starts again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from grpc import aio

from cygnet.agent.config import AgentConfig
from cygnet.agent.host import Host
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from cygnet.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from cygnet.names import shown
from cygnet.zfs import streams
from cygnet.zfs.errors import DatasetBusy

log = logging.getLogger("cygnet.agent.transfer")

PROGRESS_EVERY = 2.0  # seconds between progress log lines


@dataclass
class Progress:
    """What a stream has moved so far; `report` gets it at most every PROGRESS_EVERY."""

    sent_bytes: int = 0
    estimated_bytes: int = 0
    started: float = 0.0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent_bytes / self.seconds if self.seconds > 0 else 0.0


ProgressFn = Callable[[Progress], None]


# --- the sending side ------------------------------------------------------------


async def _snapshot_name(host: Host, database_id: str, branch_id: str, snap: str,
                         field: str) -> tuple[str, int]:
    """The full ZFS name of a branch's snapshot, and its referenced bytes."""
    db = host.find_database(database_id)
    if db is None:
        await host.catalog()
        db = host.find_database(database_id)
    if db is None:
        raise NotFound(f"database {shown(database_id)} not found")
    branch = db.branches.get(branch_id)
    if branch is None:
        raise NotFound(f"branch {shown(branch_id)} of database {db.name} not found")
    if not snap or "@" in snap or "/" in snap:
        raise InvalidArgument(field, f"{shown(snap)} is not a snapshot name")
    name = f"{branch.dataset}@{snap}"
    found = await host.zfs.get_props(name, ["referenced"]) if await host.zfs.exists(name) else {}
    if name not in found:
        raise NotFound(f"snapshot {shown(snap)} of {db.name}/{branch.name} not found")
    return name, found[name].number("referenced")


async def send_snapshot(host: Host, req: pb.SendSnapshotRequest
                        ) -> AsyncIterator[pb.TransferChunk]:
    """The chunks of `zfs send [-i base] snapshot` (SendSnapshot's handler)."""
    snap, size = await _snapshot_name(host, req.database, req.branch_id, req.snapshot,
                                      "snapshot")
    base = ""
    if req.base_snapshot:
        base = (await _snapshot_name(host, req.database, req.branch_id, req.base_snapshot,
                                     "base_snapshot"))[0]
    sent = 0
    started = time.monotonic()
    async for data in streams.send(snap, base):
        sent += len(data)
        yield pb.TransferChunk(data=data, sent_bytes=sent, estimated_bytes=size)
    log.info("sent %s%s: %d bytes in %.2fs", snap, f" (from {base})" if base else "", sent,
             time.monotonic() - started)


# --- the receiving side -------------------------------------------------------------


class Peers:
    """Channels to other agents, with this host's fleet certificate (one per address)."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._channels: dict[str, aio.Channel] = {}

    def _credentials(self) -> grpc.ChannelCredentials:
        c = self.config
        ca = c.tls_client_ca or c.coordinator_ca
        if not (c.tls_cert and c.tls_key and ca):
            raise FailedPrecondition(
                "this host has no fleet certificate (tls_cert, tls_key, tls_client_ca): "
                "agents authenticate each other with it")
        return grpc.ssl_channel_credentials(ca.read_bytes(), c.tls_key.read_bytes(),
                                            c.tls_cert.read_bytes())

    def stub(self, address: str) -> pb_grpc.AgentStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = aio.secure_channel(address, self._credentials())
            self._channels[address] = channel
        return pb_grpc.AgentStub(channel)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def peer_error(host_id: str, exc: aio.AioRpcError) -> Exception:
    """A peer's refusal as a domain error that names the peer."""
    code, details = exc.code(), exc.details() or ""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"host {host_id} is unavailable ({details})")
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"host {host_id}: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(f"host {host_id}: {details}")
    return Aborted(f"host {host_id}: {code.name}: {details}")


async def receive(stub: pb_grpc.AgentStub, req: pb.SendSnapshotRequest, target: str, *,
                  peer: str, force: bool = False, progress: ProgressFn | None = None,
                  timeout: float | None = None, attempts: int = 1) -> Progress:
    """Pulls one stream from `peer` into `zfs receive [-F] target`; returns what moved.

    A stream cut short (peer gone, receive failed, cancelled) leaves nothing
    behind: the partial stream is discarded. With `attempts` > 1 the round
    starts again from its first byte (zfs-fuse has no resume token) after a
    broken stream or a target still busy discarding the last one.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await _round(stub, req, target, peer=peer, force=force, progress=progress,
                                timeout=timeout)
        except (Unavailable, Aborted, DatasetBusy) as exc:
            if attempt == attempts:
                raise
            log.warning("stream of %s from %s broke (%s); round %d of %d starts again",
                        req.snapshot, peer, exc, attempt + 1, attempts)
            await asyncio.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


async def _round(stub: pb_grpc.AgentStub, req: pb.SendSnapshotRequest, target: str, *,
                 peer: str, force: bool, progress: ProgressFn | None,
                 timeout: float | None) -> Progress:
    done = Progress(started=time.monotonic())
    last = 0.0
    try:
        async with streams.Receiver(target, force=force) as sink:
            async for chunk in stub.SendSnapshot(req, timeout=timeout):
                await sink.write(chunk.data)
                done.sent_bytes, done.estimated_bytes = chunk.sent_bytes, chunk.estimated_bytes
                done.seconds = time.monotonic() - done.started
                if progress is not None and done.seconds - last >= PROGRESS_EVERY:
                    last = done.seconds
                    progress(done)
            await sink.finish()
    except aio.AioRpcError as exc:
        raise peer_error(peer, exc) from None
    done.seconds = time.monotonic() - done.started
    if progress is not None:
        progress(done)
    log.info("received %s from %s into %s: %d bytes in %.2fs (%.1f MB/s)", req.snapshot, peer,
             target, done.sent_bytes, done.seconds, done.rate / 1e6)
    return done
