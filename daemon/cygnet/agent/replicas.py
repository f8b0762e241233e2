"""Replicas on this host: a hot standby of another host's main, seeded by zfs send.

Layout: the replica lives where the database would, `POOL/cygnet/db/DBID`
(`cygnet:kind=replica-database`) and its main `POOL/cygnet/db/DBID/MAINID`
(`cygnet:kind=replica`), so the inventory, the supervisor and the coordinator's
catalog (which read kinds `database` and `branch`) do not see it: it is not
this host's database until it is promoted. Promotion is then two property
writes, main's first (a crash between them is finished at the next start),
and a demotion the same two writes back. The primary's host and addresses
are properties of the replica's database dataset.

Creating one: PrepareReplica on the primary (slot first, then the seed
snapshot), the database dataset with `phase=creating`, a full `zfs send` of
the snapshot pulled from the primary's agent (agent/transfer.py), the seed
snapshot released, then the standby starts (clone fix-up, standby.signal,
primary_conninfo with a passfile beside pgdata) and `phase=ready`. Any
failure removes what was made and the slot; the reconciler's start
(`start_all`) removes a `creating` leftover of a crash.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from cygnet.agent import archive, lease
from cygnet.agent import layout as L
from cygnet.agent import replica_source as src
from cygnet.agent.config import AgentConfig
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.agent.registration import api_address
from cygnet.agent.transfer import Peers, receive
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.errors import FailedPrecondition, NotFound, ResourceExhausted
from cygnet.postgres import _fs, fixup, process, sql
from cygnet.postgres.config import (
    REPLICATION_ROLE,
    ArchiveSettings,
    ClusterSettings,
    StandbySettings,
    write_settings,
)
from cygnet.postgres.sizes import size_class
from cygnet.postgres.versions import resolve_version
from cygnet.states import Desired
from cygnet.zfs import Dataset
from cygnet.zfs.errors import ZfsError
from cygnet.zfs.pools import pool_status

log = logging.getLogger("cygnet.agent.replicas")

KIND_DB, KIND_MAIN = "replica-database", "replica"
# A replica's stale main, set aside by a reseed (agent/reseed.py): kept, never started.
KIND_LOST = "lost-copy"
# On a replica database whose main cannot follow the primary: seed it afresh.
P_RESEED = "cygnet:reseed"
P_PRIMARY_HOST = "cygnet:primary-host"  # the primary's host id
P_PRIMARY_API = "cygnet:primary-api"  # its agent's host:port
P_PRIMARY_PG = "cygnet:primary-pg"  # its Postgres host:port
P_SLOT = "cygnet:slot"
P_SEED = "cygnet:seed"  # bytes:seconds of the seed
EXTRA = (P_PRIMARY_HOST, P_PRIMARY_API, P_PRIMARY_PG, P_SLOT, P_SEED, src.P_SYNC, P_RESEED)
PASSFILE = "replication.pass"
START_TIMEOUT = 120.0
JOIN_WAIT = 30.0  # for a new standby to stream before it counts for synchronous commit


@dataclass
class ReplicaRecord:
    db: DatabaseRecord
    main: BranchRecord
    props: dict[str, str]

    @property
    def primary_host(self) -> str:
        return self.props.get(P_PRIMARY_HOST, "")

    @property
    def needs_reseed(self) -> bool:
        return bool(self.props.get(P_RESEED))


_MAIN_KINDS = (KIND_MAIN, "branch", None)


def main_child(children: list[Dataset]) -> Dataset | None:
    """Which dataset below a replica database is its main: the one of kind replica,
    else branch (a promotion under way), else one without a kind (a seed just
    received, main once the stale main it replaces is a lost copy, agent/reseed.py).
    A lost copy never is."""
    candidates = [c for c in children if c.user.get(L.P_KIND) in _MAIN_KINDS]
    if not candidates:
        return None
    return min(candidates, key=lambda c: _MAIN_KINDS.index(c.user.get(L.P_KIND)))


def _records(host: Host) -> dict[str, ReplicaRecord]:
    """The replicas in the host's catalog (call host.catalog() first for a fresh view)."""
    assert host.datasets is not None
    found: dict[str, ReplicaRecord] = {}
    datasets = host.datasets.datasets()
    for ds in datasets.values():
        u = ds.user
        if u.get(L.P_KIND) != KIND_DB:
            continue
        db = DatabaseRecord(u.get(L.P_ID, ""), u.get(L.P_NAME, ""), ds.name, L.pool_of(ds.name),
                            u.get(L.P_VERSION, ""), u.get(L.P_SIZE, ""),
                            u.get(L.P_PHASE, L.PHASE_READY), 0.0, "")
        main = BranchRecord("", "main", db.id, "", "", None, 0, Desired.RUNNING,
                            L.PHASE_READY, 0.0, "", 0, 0)
        child = main_child([c for c in datasets.values()
                            if c.name.startswith(ds.name + "/") and "@" not in c.name])
        if child is not None:
            main.id, main.dataset = child.user.get(L.P_ID, ""), child.name
            port = child.user.get(L.P_PORT, "0")
            main.port = int(port) if port.isdigit() else 0
            main.phase = child.user.get(L.P_KIND) or ""  # the kind, for finish_promotion
        found[db.id] = ReplicaRecord(db, main, {})
    return found


def held(host: Host) -> list[ReplicaRecord]:
    """The replicas in the catalog as last read (none before the first read)."""
    return list(_records(host).values()) if host.datasets is not None else []


async def find(host: Host, database_id: str, *, required: bool = True) -> ReplicaRecord | None:
    await host.catalog()
    rec = _records(host).get(database_id)
    if rec is None:
        if required:
            raise NotFound(f"this host holds no replica of database {database_id}")
        return None
    props = await host.zfs.get_props(rec.db.dataset, list(EXTRA))
    rec.props = props[rec.db.dataset].user if rec.db.dataset in props else {}
    return rec


def _passfile(host: Host, main: BranchRecord) -> Path:
    return host.clusters.files(main).secret_file.with_name(PASSFILE)


def _settings(host: Host, rec: ReplicaRecord, standby: bool) -> ClusterSettings:
    major = int((rec.db.version or "0").split(".")[0])
    conninfo = ""
    if standby:
        pg_host, _, pg_port = rec.props.get(P_PRIMARY_PG, "").rpartition(":")
        # The password comes from the passfile: nothing secret in the config or `ps`.
        conninfo = (f"host={pg_host} port={pg_port} user={REPLICATION_ROLE} "
                    f"passfile={_passfile(host, rec.main)} sslmode=require "
                    f"application_name={rec.props.get(P_SLOT, '')} connect_timeout=5")
    return ClusterSettings(
        port=rec.main.port, listen_addresses=host.clusters.listen_addresses,
        socket_dir=host.clusters.socket_dir(rec.main), size=size_class(rec.db.size_class),
        tls=host.clusters.tls, major=major, archive=_archive(host, rec),
        standby=StandbySettings(conninfo, rec.props.get(P_SLOT, "")) if standby else None,
        # Fenced from the start: once promoted it is a primary under the host's lease.
        fence_file=lease.fence_file(host.config, host.clusters.pgdata(rec.main), replica=True),
        failsafe_file=lease.failsafe_path(host.config, rec.db.id))


def _archive(host: Host, rec: ReplicaRecord) -> ArchiveSettings | None:
    """Main's archiving, set while it is a standby: a standby archives nothing
    (archive_mode = on), and once promoted it archives without a restart."""
    try:
        return archive.archive_settings(host.config, rec.db, rec.main)
    except Exception as exc:
        log.warning("replica of %s: no WAL archiving after a promotion: %s", rec.db.id, exc)
        return None


async def start_standby(host: Host, rec: ReplicaRecord, *, fresh: bool) -> None:
    """Starts the standby unless it runs; `fresh` data (a seed, an old primary) is
    fixed up first: no pid file, slots or inherited primary/archive settings."""
    if host.clusters.live(rec.main) is not None:
        return
    files = host.clusters.files(rec.main)
    settings = _settings(host, rec, standby=True)
    if fresh:
        fixup.prepare_clone(files.pgdata, files.log_file, settings)
    else:
        (files.pgdata / "postmaster.pid").unlink(missing_ok=True)
        write_settings(files.pgdata, settings)
    _fs.atomic_write(files.pgdata / "standby.signal", "")
    bindir = resolve_version(rec.db.version, host.config.postgres_root)[1]
    await process.start(bindir, files.pgdata, files.log_file, timeout=START_TIMEOUT)


async def join_sync(host: Host, rec: ReplicaRecord, stub: Any) -> None:
    """Once the standby streams, the primary counts its slot for synchronous commit:
    PrepareReplica again, without a seed (replica_source.apply_sync). Best effort: a
    standby that does not stream in time stays out until its next call."""
    if rec.props.get(src.P_SYNC) != "on":
        return
    deadline = time.monotonic() + JOIN_WAIT
    sock = host.clusters.socket_dir(rec.main)
    try:
        while not await sql.query_all(sock, rec.main.port, "SELECT 1 FROM pg_stat_wal_receiver "
                                      "WHERE status = 'streaming'"):
            if time.monotonic() > deadline:
                log.warning("replica of %s: not streaming after %.0fs; not yet counted for "
                            "synchronous commit", rec.db.id, JOIN_WAIT)
                return
            await asyncio.sleep(0.2)
        await stub.PrepareReplica(prepare_request(host.config, rec.db.id), timeout=60)
    except Exception as exc:
        log.warning("replica of %s: not yet counted for synchronous commit: %s", rec.db.id, exc)


def prepare_request(config: AgentConfig, database: str, *, seed: bool = False,
                    synchronous: bool = False) -> pb.PrepareReplicaRequest:
    """A PrepareReplica request that also says where this agent answers ConfirmPrimary
    (agent/failsafe.py); nothing when it has no TCP listener."""
    address = api_address(config)
    return pb.PrepareReplicaRequest(
        database=database, seed=seed, synchronous=synchronous,
        caller_address=address if address.rpartition(":")[2].isdigit() else "")


def write_passfile(host: Host, main: BranchRecord, prep: pb.PrepareReplicaResponse) -> None:
    # host:port:database:user:password; the password is url-safe (no ':' or '\').
    _fs.atomic_write(_passfile(host, main), f"{prep.host}:{prep.port}:*:{prep.replication_user}:"
                     f"{prep.replication_password}\n")


def primary_props(req_host: str, req_address: str,
                  prep: pb.PrepareReplicaResponse) -> dict[str, str]:
    return {P_PRIMARY_HOST: req_host, P_PRIMARY_API: req_address,
            P_PRIMARY_PG: f"{prep.host}:{prep.port}", P_SLOT: prep.slot}


async def create(host: Host, peers: Peers, req: pb.CreateReplicaRequest) -> pb.Replica:
    """CreateReplica: prepare on the primary, receive the seed, start streaming."""
    own = host.config.host_id
    if req.primary_host_id == own:
        raise FailedPrecondition("a replica on the primary's own host is refused: "
                                 f"host {own} holds database {req.database}")
    await host.catalog()
    if host.find_database(req.database) is not None:
        raise FailedPrecondition(f"host {own} holds database {req.database} itself")
    existing = await find(host, req.database, required=False)
    if existing is not None:
        return await describe(host, existing)
    stub = peers.stub(req.primary_address)
    prep: pb.PrepareReplicaResponse = await stub.PrepareReplica(prepare_request(
        host.config, req.database, seed=True, synchronous=req.synchronous), timeout=60)
    async with host.db_locks[prep.database_id]:  # the supervision round keeps off
        try:
            resolve_version(prep.postgres_version, host.config.postgres_root)  # here?
            rec = await _make_dataset(host, req, prep)
        except BaseException:
            await release(stub, prep)  # the slot and snapshot made for nothing
            raise
        return await _seed(host, stub, req, prep, rec)


async def release(stub: Any, prep: pb.PrepareReplicaResponse, *, keep_slot: bool = False
                  ) -> None:
    """Drops the seed snapshot and (unless kept) the slot on the primary; logs a failure."""
    try:
        await stub.ReleaseReplica(pb.ReleaseReplicaRequest(
            database=prep.database_id, snapshot=prep.snapshot, keep_slot=keep_slot), timeout=60)
    except Exception as exc:
        log.error("replica of %s: slot and seed snapshot not released: %s",
                  prep.database_id, exc)


async def _seed(host: Host, stub: Any, req: pb.CreateReplicaRequest,
                prep: pb.PrepareReplicaResponse, rec: ReplicaRecord) -> pb.Replica:
    try:
        with host.receiving(rec.main.dataset):
            done = await receive(stub, pb.SendSnapshotRequest(
                database=prep.database_id, branch_id=prep.main_branch_id,
                snapshot=prep.snapshot), rec.main.dataset, peer=req.primary_host_id,
                attempts=3)
        await host.zfs.set_props(rec.main.dataset, {
            L.P_KIND: KIND_MAIN, L.P_ID: prep.main_branch_id, L.P_NAME: "main",
            L.P_DATABASE: prep.database_id, L.P_PORT: str(rec.main.port)})
        await host.zfs.set_props(rec.db.dataset, {P_SEED: f"{done.sent_bytes}:{done.seconds:.3f}"})
        await host.zfs.destroy(f"{rec.main.dataset}@{prep.snapshot}")
        await stub.ReleaseReplica(pb.ReleaseReplicaRequest(
            database=prep.database_id, snapshot=prep.snapshot, keep_slot=True), timeout=60)
        if not host.mounted(rec.main):
            await host.zfs.mount(rec.main.dataset)
        write_passfile(host, rec.main, prep)
        rec.props = {**rec.props, P_SEED: f"{done.sent_bytes}:{done.seconds:.3f}"}
        await start_standby(host, rec, fresh=True)
        await host.zfs.set_props(rec.db.dataset, {L.P_PHASE: L.PHASE_READY})
        await join_sync(host, rec, stub)
    except BaseException as exc:
        log.warning("replica of %s failed (%s); removing what was made", req.database, exc)
        await _undo(host, rec, stub, prep)
        raise
    finally:
        host.ports.release(rec.main.port)
    rec.db.phase = L.PHASE_READY
    return await describe(host, rec)


def require_seed_room(host: Host, free: int, prep: pb.PrepareReplicaResponse,
                      why: str) -> None:
    """ResourceExhausted saying `why` when `free` bytes cannot take the seed and keep
    the host's reserve."""
    if free < prep.estimated_bytes + host.config.min_free_bytes:
        raise ResourceExhausted(f"{why}: {prep.estimated_bytes // 2**20} MiB needed, "
                                f"{free // 2**20} MiB free")


async def _make_dataset(host: Host, req: pb.CreateReplicaRequest,
                        prep: pb.PrepareReplicaResponse) -> ReplicaRecord:
    free = {p: (await pool_status(host.zfs.runner, p)).free_bytes for p in host.config.pools}
    pool = max(free, key=free.__getitem__)
    require_seed_room(host, free[pool], prep,
                      f"no pool on host {host.config.host_id} has room for the replica")
    async with host.catalog_lock:
        port = host.ports.reserve()
        dataset = L.database(pool, prep.database_id)
        props = {"canmount": "off", L.P_KIND: KIND_DB, L.P_ID: prep.database_id,
                 L.P_NAME: prep.database_name, L.P_VERSION: prep.postgres_version,
                 L.P_SIZE: prep.size_class, L.P_PHASE: L.PHASE_CREATING,
                 L.P_CREATED: f"{time.time():.3f}", L.P_REQUEST: req.request_id,
                 **primary_props(req.primary_host_id, req.primary_address, prep),
                 **({src.P_SYNC: "on"} if prep.synchronous else {})}
        try:
            await host.zfs.create(dataset, props)
        except BaseException:
            host.ports.release(port)
            raise
    db = DatabaseRecord(prep.database_id, prep.database_name, dataset, pool,
                        prep.postgres_version, prep.size_class, L.PHASE_CREATING, time.time(), "")
    main = BranchRecord(prep.main_branch_id, "main", db.id, "", f"{dataset}/{prep.main_branch_id}",
                        None, port, Desired.RUNNING, L.PHASE_READY, time.time(), "", 0, 0)
    return ReplicaRecord(db, main, {k: str(v) for k, v in props.items()})


async def _undo(host: Host, rec: ReplicaRecord, stub: Any, prep: pb.PrepareReplicaResponse
                ) -> None:
    try:
        await _remove(host, rec)
    except Exception as exc:
        log.error("replica of %s: clean-up incomplete: %s", rec.db.id, exc)
    await release(stub, prep)


async def _remove(host: Host, rec: ReplicaRecord) -> None:
    if rec.main.dataset and host.clusters.live(rec.main) is not None:
        await process.stop(host.clusters.pgdata(rec.main), "immediate")
    try:
        await host.zfs.destroy(rec.db.dataset, recursive=True)
    except ZfsError as exc:
        if await host.zfs.exists(rec.db.dataset):
            raise
        log.debug("%s already gone: %s", rec.db.dataset, exc)


async def delete(host: Host, peers: Peers, database_id: str) -> None:
    """DeleteReplica: stop, destroy, and drop the slot on the primary (if it answers).
    Under the database's lock: start_all restarts a standby it finds stopped and
    unlocked, which between the stop and the destroy made the dataset busy."""
    async with host.db_locks[database_id]:
        rec = await find(host, database_id)
        assert rec is not None
        await _remove(host, rec)
    address = rec.props.get(P_PRIMARY_API, "")
    if address:
        try:
            await peers.stub(address).ReleaseReplica(
                pb.ReleaseReplicaRequest(database=database_id), timeout=30)
        except Exception as exc:
            log.warning("replica of %s removed, but its slot on %s was not dropped: %s",
                        database_id, rec.primary_host, exc)


async def start_all(host: Host, *, first: bool = False) -> None:
    """Every supervision round: finish promotions a crash cut short and start
    standbys that should run; the `first` (at daemon start) also removes the
    half-made replicas a crash left. A replica under its lock is being worked on."""
    await host.catalog()
    for db_id, rec in _records(host).items():
        if host.db_locks[db_id].locked():
            continue
        try:
            if rec.db.phase == L.PHASE_CREATING:
                if first and host.clusters.live(rec.main) is None:
                    log.info("removing the half-made replica of %s", db_id)
                    await _remove(host, rec)
                continue
            if rec.main.phase == "branch":  # promoted, database kind not yet written
                await host.zfs.set_props(rec.db.dataset, {L.P_KIND: "database"})
                continue
            full = await find(host, db_id)
            if full is not None and full.needs_reseed:
                continue  # stale data: the coordinator's next rejoin seeds it afresh
            if full is not None and full.main.dataset and host.clusters.live(full.main) is None:
                await start_standby(host, full, fresh=False)
        except Exception as exc:
            log.error("replica of %s: %s", db_id, exc)


async def supervise(host: Host, every: float = 5.0) -> None:
    """Restarts replicas whose postmaster died (the branch supervisor does not see them)."""
    first = True
    while True:
        await start_all(host, first=first)
        first = False
        try:
            _observed[:] = await list_replicas(host)  # for /metrics, without a query per scrape
        except Exception as exc:
            log.debug("replica status not read: %s", exc)
        await asyncio.sleep(every)


_observed: list[pb.Replica] = []


def metrics() -> list[Metric]:
    """Each replica's lag and whether it streams, as of the last supervision round."""
    labels = ["database_id", "database", "primary_host"]
    lag_bytes = GaugeMetricFamily("cygnet_replica_lag_bytes",
                                  "WAL the primary has sent that this replica has not replayed",
                                  labels=labels)
    lag_seconds = GaugeMetricFamily(
        "cygnet_replica_lag_seconds", "Age of the last replayed commit while replay is behind; "
        "0 when caught up", labels=labels)
    streaming = GaugeMetricFamily("cygnet_replica_streaming",
                                  "1 while the replica streams from its primary", labels=labels)
    for r in _observed:
        key = [r.database_id, r.database_name, r.primary_host_id]
        lag_bytes.add_metric(key, float(r.lag_bytes))
        lag_seconds.add_metric(key, r.lag_seconds)
        streaming.add_metric(key, 1.0 if r.state == "streaming" else 0.0)
    return [lag_bytes, lag_seconds, streaming]


_STATUS = """
SELECT coalesce(pg_last_wal_replay_lsn()::text, ''),
       coalesce(pg_wal_lsn_diff(w.latest_end_lsn, pg_last_wal_replay_lsn()), 0)::bigint,
       CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn()
            THEN 0 ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8,
       coalesce(w.status, 'disconnected'), pg_is_in_recovery()
FROM (SELECT 1) one LEFT JOIN pg_stat_wal_receiver w ON true
"""


async def describe(host: Host, rec: ReplicaRecord) -> pb.Replica:
    seed_bytes, _, seed_seconds = rec.props.get(P_SEED, "0:0").partition(":")
    out = pb.Replica(
        database_id=rec.db.id, database_name=rec.db.name, host_id=host.config.host_id,
        primary_host_id=rec.primary_host, synchronous=rec.props.get(src.P_SYNC) == "on",
        postgres_version=rec.db.version, seed_bytes=int(seed_bytes or 0),
        seed_seconds=float(seed_seconds or 0), state="stopped")
    if rec.db.phase == L.PHASE_CREATING:
        out.state = "starting"
        return out
    conn = host.clusters.connection(rec.main)
    # No password here (ListReplicas is a read): the database's, from GetConnection.
    uri = sql.connection_uri(conn.host, conn.port, conn.user, "", conn.dbname).replace(
        ":@", "@", 1)
    params = urlencode({"sslmode": conn.sslmode, "target_session_attrs": "read-only",
                        **({"sslrootcert": str(conn.sslrootcert)} if conn.sslrootcert else {})},
                       safe="/")
    out.connection.CopyFrom(pb.Connection(
        host=conn.host, port=conn.port, user=conn.user, dbname=conn.dbname,
        uri=f"{uri}{'&' if '?' in uri else '?'}{params}", socket_dir=str(conn.socket_dir),
        sslmode=conn.sslmode, sslrootcert=str(conn.sslrootcert or "")))
    if not host.clusters.accepting(rec.main):
        return out
    try:
        row = (await sql.query_all(conn.socket_dir, conn.port, _STATUS))[0]
    except Exception as exc:
        out.state, out.state_message = "failed", str(exc)[:300]
        return out
    out.replay_lsn, out.lag_bytes, out.lag_seconds = row[0], max(0, int(row[1])), float(row[2])
    out.state = row[3] if row[4] else "promoted"
    return out


async def list_replicas(host: Host, database_id: str = "") -> list[pb.Replica]:
    await host.catalog()
    out = []
    for db_id in sorted(_records(host)):
        if database_id and db_id != database_id:
            continue
        rec = await find(host, db_id)
        if rec is not None:
            out.append(await describe(host, rec))
    return out
