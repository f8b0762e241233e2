"""The agent's steps of a planned switchover (the coordinator runs them in order, docs/ha.md).

1. HandOverPrimary, on the primary's host: main stops cleanly ("fast"): its
   walsenders send every WAL record up to the shutdown checkpoint to the
   attached standbys, and wait until they have flushed it, before they exit.
   The checkpoint's position comes back.
2. PromoteReplica, on the replica's host: once the replica has received WAL
   up to that position, `pg_promote`; then its datasets become the
   database's (kind `branch` on main first, then `database`).
3. DemoteToReplica, on the old primary's host: its stopped main becomes a
   replica of the new primary, with a slot there and no new seed (it stopped
   exactly where the new primary's timeline begins). On a host that holds a
   replica of the database, the same call points that replica at the new
   primary.
"""

from __future__ import annotations

import asyncio
import logging
import time

from grpc import aio

from cygnet.agent import layout as L
from cygnet.agent import rejoin, replicas, reseed
from cygnet.agent import replica_source as src
from cygnet.agent.events import EventKind, emit
from cygnet.agent.service import AgentService, BranchRef
from cygnet.agent.transfer import Peers, peer_error
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.errors import FailedPrecondition
from cygnet.postgres import _fs, process, sql
from cygnet.postgres.config import write_settings
from cygnet.states import Desired
from cygnet.wal.lsn import parse_lsn

log = logging.getLogger("cygnet.agent.replicas")

DEFAULT_WAIT = 30.0


async def hand_over(service: AgentService, req: pb.HandOverPrimaryRequest
                    ) -> pb.HandOverPrimaryResponse:
    host = service.host
    db_id = await service.database_id(req.database)
    db, _ = await service.read_database(db_id, snapshots=False)
    main = src.main_of(db)
    others = sorted(b.name for b in db.branches.values() if b.id != main.id)
    if others:
        raise FailedPrecondition(f"database {db.name} has branches besides main "
                                 f"({', '.join(others)}): a switchover moves main only; "
                                 "delete them first")
    attached = [r for r in await src.lag(host, main) if r.state == "streaming"]
    if not attached:
        raise FailedPrecondition(f"database {db.name}: no replica is streaming from main")
    await service.set_running(BranchRef(branch_id=main.id, field="database"), False, "")
    lsn = await src.stop_lsn(host, db, main)
    log.info("database %s: main stopped for a switchover at %s", db.id, lsn)
    return pb.HandOverPrimaryResponse(database_id=db.id, stop_lsn=lsn)


async def _wait_received(rec: replicas.ReplicaRecord, conn_sock: object, port: int, lsn: str,
                         wait: float) -> str:
    deadline = time.monotonic() + wait
    while True:
        row = (await sql.query_all(
            conn_sock, port,  # type: ignore[arg-type]
            "SELECT coalesce(pg_last_wal_receive_lsn()::text, ''), "
            "coalesce(pg_last_wal_receive_lsn() >= %s::pg_lsn, false)", (lsn,)))[0]
        if row[1]:
            return str(row[0])
        if time.monotonic() > deadline:
            raise FailedPrecondition(
                f"the replica of {rec.db.id} has received WAL up to {row[0] or 'nothing'}, "
                f"not {lsn}, after {wait:.0f}s: not promoted, nothing changed")
        await asyncio.sleep(0.02)


async def promote(service: AgentService, req: pb.PromoteReplicaRequest) -> pb.Replica:
    host = service.host
    rec = await replicas.find(host, req.database)
    assert rec is not None
    if req.min_lsn:
        parse_lsn(req.min_lsn)
    async with host.db_locks[rec.db.id]:
        if not host.clusters.accepting(rec.main):
            raise FailedPrecondition(f"the replica of {rec.db.id} is not running")
        sock, port = host.clusters.socket_dir(rec.main), rec.main.port
        if req.min_lsn:
            await _wait_received(rec, sock, port, req.min_lsn,
                                 float(req.wait_seconds or DEFAULT_WAIT))
        # Replays everything received, then ends recovery on a new timeline.
        await sql.query_all(sock, port, "SELECT pg_promote(true, 60)")
        # Promoted: from here on nothing may fail the call, or the coordinator
        # would start the old primary again beside this one.
        await _become_main(service, rec)
    emit(EventKind.PROMOTED, database_id=rec.db.id, branch_id=rec.main.id,
         database=rec.db.name, branch="main", reason="replica promoted: planned switchover")
    out = await replicas.describe(host, rec)
    out.state = "promoted"
    return out


async def _become_main(service: AgentService, rec: replicas.ReplicaRecord) -> None:
    """The promoted replica's datasets become the database's; each step is retried
    (the props are what make it this host's main), the sync setting best effort."""
    host = service.host
    for attempt in range(1, 31):
        try:
            await _flip(service, rec)
            break
        except Exception as exc:
            log.error("database %s: promoted, datasets not switched yet (%s); retrying",
                      rec.db.id, exc)
            await asyncio.sleep(min(attempt, 5))
    for _ in range(30):
        try:
            db, _ = await service.read_database(rec.db.id, snapshots=False)
            await src.apply_sync(host, db, src.main_of(db))
            return
        except Exception as exc:
            log.warning("database %s: synchronous_standby_names not set yet: %s", rec.db.id, exc)
            await asyncio.sleep(1)


async def _flip(service: AgentService, rec: replicas.ReplicaRecord) -> None:
    host = service.host
    files = host.clusters.files(rec.main)
    write_settings(files.pgdata, replicas._settings(host, rec, standby=False))
    _fs.remove_if_exists(files.secret_file.with_name(replicas.PASSFILE))
    await host.zfs.set_props(rec.main.dataset, {
        L.P_KIND: "branch", L.P_PHASE: L.PHASE_READY, L.P_DESIRED: Desired.RUNNING,
        L.P_CREATED: f"{time.time():.3f}"})
    await host.zfs.set_props(rec.db.dataset, {L.P_KIND: "database"})
    host.ports.commit(rec.main.port)


async def demote(service: AgentService, peers: Peers, req: pb.DemoteToReplicaRequest
                 ) -> pb.Replica:
    host = service.host
    await host.catalog()
    if host.find_database(req.database) is None:
        return await _repoint(service, peers, req)
    db_id = await service.database_id(req.database)
    if req.rewind:  # after a failover: a fenced main is stopped here, not handed over
        db, _ = await service.read_database(db_id, snapshots=False)
        main = src.main_of(db)
        rejoin.check_can_rejoin(host, db, main)
        for b in rejoin.other_branches(db, main):  # set aside below (a fast stop first)
            if b.phase == L.PHASE_READY:
                await service.set_running(BranchRef(branch_id=b.id, field="database"), False,
                                          "")
        await service.set_running(BranchRef(branch_id=main.id, field="database"), False, "")
    async with host.db_locks[db_id]:
        db, _ = await service.read_database(db_id, snapshots=False)
        main = src.main_of(db)
        if host.clusters.live(main) is not None:
            raise FailedPrecondition(f"database {db.name}: main still runs here; hand it over "
                                     "first")
        prep = await _prepare_on(peers, req)
        stale = ""
        if req.rewind:  # the standby runs before anything says it is a replica
            rejoin.check_can_rejoin(host, db, main)
            await rejoin.set_aside(host, db, main, req.primary_host_id)
            try:
                await rejoin.rewind(host, db, main, prep, replicas.primary_props(
                    req.primary_host_id, req.primary_address, prep))
            except rejoin.RewindFailed as exc:
                stale = str(exc)
                log.warning("%s; it is seeded afresh instead", stale)
                # First: the data never starts once it is a replica's (replicas.start_all).
                await host.zfs.set_props(db.dataset, {replicas.P_RESEED: "needed"})
        await host.zfs.set_props(db.dataset, {
            L.P_KIND: replicas.KIND_DB, **replicas.primary_props(
                req.primary_host_id, req.primary_address, prep)})
        await host.zfs.set_props(main.dataset, {L.P_KIND: replicas.KIND_MAIN})
        host.ports.release(main.port)
        host.known.pop(db_id, None)
        rec = await replicas.find(host, db_id)
        assert rec is not None
        if stale:
            rec = await reseed.reseed(host, peers.stub(req.primary_address), rec,
                                      req.primary_host_id, prep)
        else:
            replicas.write_passfile(host, rec.main, prep)
            await replicas.start_standby(host, rec, fresh=True)
    await replicas.join_sync(host, rec, peers.stub(req.primary_address))
    log.info("database %s: the old primary follows %s", db_id, req.primary_host_id)
    return await replicas.describe(host, rec)


async def _prepare_on(peers: Peers, req: pb.DemoteToReplicaRequest
                      ) -> pb.PrepareReplicaResponse:
    try:
        prep: pb.PrepareReplicaResponse = await peers.stub(req.primary_address).PrepareReplica(
            replicas.prepare_request(peers.config, req.database), timeout=60)
    except aio.AioRpcError as exc:
        raise peer_error(req.primary_host_id, exc) from None
    return prep


async def _repoint(service: AgentService, peers: Peers, req: pb.DemoteToReplicaRequest
                   ) -> pb.Replica:
    """A replica of the database on this host follows the new primary."""
    host = service.host
    rec = await replicas.find(host, req.database)
    assert rec is not None
    if rec.primary_host == req.primary_host_id and host.clusters.live(rec.main) is not None:
        return await replicas.describe(host, rec)
    prep = await _prepare_on(peers, req)
    async with host.db_locks[rec.db.id]:
        await host.zfs.set_props(rec.db.dataset, replicas.primary_props(
            req.primary_host_id, req.primary_address, prep))
        if host.clusters.live(rec.main) is not None:
            await process.stop(host.clusters.pgdata(rec.main), "fast")
        rec = await replicas.find(host, req.database)
        assert rec is not None
        if rec.needs_reseed:  # an old primary whose rewind failed, and its reseed too
            rec = await reseed.reseed(host, peers.stub(req.primary_address), rec,
                                      req.primary_host_id, prep)
        else:
            replicas.write_passfile(host, rec.main, prep)
            await replicas.start_standby(host, rec, fresh=False)
    await replicas.join_sync(host, rec, peers.stub(req.primary_address))
    return await replicas.describe(host, rec)
