"""The primary's side of replicas: the replication role, slots, seed snapshots, lag, handover.

Replicas stream main only. Each replica host has one physical slot on the
primary, named after it (`slot_for`), which is also the standby's
application_name, so pg_stat_replication and synchronous_standby_names name
the same thing. The slot is made before the seed snapshot, so no WAL the
replica needs can be recycled while the snapshot travels.

The replication role `cygnet_replicator` has its own password, kept in
`replication.secret` beside main's `secret` (outside pgdata, 0600); it is in
the role catalog, so every replica and a promoted one have it too.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from pathlib import Path

from psycopg import sql as psql

from cygnet import command
from cygnet.agent import layout as L
from cygnet.agent import lease
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.errors import FailedPrecondition, InvalidArgument, NotFound
from cygnet.postgres import sql
from cygnet.postgres.config import REPLICATION_ROLE

log = logging.getLogger("cygnet.agent.replicas")

SLOT_PREFIX = "cygnet_replica_"
SECRET_FILE = "replication.secret"
P_SYNC = "cygnet:sync-replicas"  # on a database: on, commits wait for ANY 1 replica
SEED_KIND = "replica-seed"  # cygnet:snapshot-kind of a seed snapshot
# On a database: where each replica's agent answers (`host=address,...`), as
# each said in its last PrepareReplica; the failsafe asks them (agent/failsafe.py).
REPLICA_API = "cygnet:replica-api"

REWIND_FUNCTIONS = ("pg_ls_dir(text, boolean, boolean)", "pg_stat_file(text, boolean)",
                    "pg_read_binary_file(text)",
                    "pg_read_binary_file(text, bigint, bigint, boolean)")


def slot_for(host_id: str) -> str:
    """A slot name for a host id: [a-z0-9] kept, anything else as _XX (reversible)."""
    out = SLOT_PREFIX + "".join(c if c.isascii() and (c.islower() or c.isdigit())
                                else f"_{ord(c):02x}" for c in host_id)
    if len(out) > 63 or not host_id:
        raise InvalidArgument("host_id", f"{host_id!r} is too long for a replication slot name")
    return out


def host_of(slot: str) -> str:
    body = slot.removeprefix(SLOT_PREFIX)
    return re.sub(r"_([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), body)


def main_of(db: DatabaseRecord) -> BranchRecord:
    main = db.main
    if main is None:
        raise NotFound(f"database {db.name} has no main branch")
    return main


def _secret_path(host: Host, main: BranchRecord) -> Path:
    return host.clusters.files(main).secret_file.with_name(SECRET_FILE)


def _require_running(host: Host, main: BranchRecord, db: DatabaseRecord) -> None:
    if not host.clusters.accepting(main):
        raise FailedPrecondition(f"database {db.name}: main is not running; start it first")


async def _ensure_role(host: Host, main: BranchRecord) -> str:
    """The replication role's password (made, with the role, the first time)."""
    path = _secret_path(host, main)
    password = path.read_text().strip() if path.exists() else ""
    if not password:
        password = secrets.token_urlsafe(24)
        fd = path.open("w")
        path.chmod(0o600)
        with fd:
            fd.write(password)
    sock, port = host.clusters.socket_dir(main), main.port
    # Committed locally: with synchronous replicas, the standby this role is for
    # (or one rejoining) cannot confirm these changes before it streams.
    async with await sql.connect(sock, port) as conn:
        await conn.execute("SET synchronous_commit = local")
        exists = await (await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                           (REPLICATION_ROLE,))).fetchone()
        if not exists:
            await conn.execute(psql.SQL("CREATE ROLE {} WITH REPLICATION LOGIN").format(
                psql.Identifier(REPLICATION_ROLE)))
        # What pg_rewind reads on its source, so an old primary can rejoin after a
        # failover (agent/rejoin.py); no more than the WAL stream already shows.
        for function in REWIND_FUNCTIONS:
            await conn.execute(psql.SQL("GRANT EXECUTE ON FUNCTION pg_catalog.{} TO {}").format(
                psql.SQL(function), psql.Identifier(REPLICATION_ROLE)))
    # Hashed on this side (SCRAM), as every Cygnet password: never sent in clear.
    await sql.set_password(sock, port, REPLICATION_ROLE, password, local_commit=True)
    return password


async def _ensure_slot(host: Host, main: BranchRecord, slot: str) -> bool:
    """Makes the slot unless it exists; True if it was made now."""
    # immediately_reserve: the slot holds WAL from now on, before any snapshot.
    made = await sql.query_all(
        host.clusters.socket_dir(main), main.port,
        "SELECT pg_create_physical_replication_slot(%s, true) WHERE NOT EXISTS "
        "(SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)", (slot, slot))
    return bool(made)


async def apply_sync(host: Host, db: DatabaseRecord, main: BranchRecord,
                     leave_out: str = "") -> str:
    """Sets synchronous_standby_names from the database's setting and its slots:
    `ANY 1 (every replica)`, so one dead replica of two blocks no commit.

    `leave_out`: a slot just made, whose standby is still being seeded or
    rewound. It cannot confirm a commit yet, so counting it would stop every
    commit of a database with no other replica for the whole seed; it counts
    once its standby streams and asks again (PrepareReplica without a seed)."""
    sock, port = host.clusters.socket_dir(main), main.port
    wanted = (await host.zfs.get_props(db.dataset, [P_SYNC]))[db.dataset].user.get(P_SYNC)
    slots = [r[0] for r in await sql.query_all(
        sock, port, "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE %s "
        "ORDER BY 1", (SLOT_PREFIX + "%",)) if r[0] != leave_out]
    names = ", ".join(f'"{s}"' for s in slots)
    value = f"ANY 1 ({names})" if wanted == "on" and slots else ""
    async with await sql.connect(sock, port) as conn:
        if value:
            await conn.execute(psql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(
                psql.Literal(value)))
        else:
            await conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
        await conn.execute("SELECT pg_reload_conf()")
    return value


async def prepare(host: Host, db: DatabaseRecord, caller: str,
                  req: pb.PrepareReplicaRequest) -> pb.PrepareReplicaResponse:
    """PrepareReplica, under the database's lock: role, slot, then (seed) the snapshot."""
    main = main_of(db)
    _require_running(host, main, db)
    if caller == (host.config.host_id or ""):
        raise FailedPrecondition("a replica on the primary's own host is refused")
    slot = slot_for(caller)
    if req.caller_address:
        await _remember_address(host, db, caller, req.caller_address)
    password = await _ensure_role(host, main)
    made = await _ensure_slot(host, main, slot)
    # A replicated primary is fenced by the host's lease (docs/ha.md "Fencing").
    await lease.ensure_fenced(host, db, main)
    if req.synchronous:
        await host.zfs.set_props(db.dataset, {P_SYNC: "on"})
    await apply_sync(host, db, main, leave_out=slot if made else "")
    sync = (await host.zfs.get_props(db.dataset, [P_SYNC]))[db.dataset].user.get(P_SYNC)
    snapshot, size = "", 0
    if req.seed or await _promoted_since_checkpoint(host, main):
        # Seed: a short crash recovery on the replica. Just promoted: pg_control
        # still names the old timeline until a checkpoint on the new one, and
        # pg_rewind (before PostgreSQL 16) reads the source's timeline there.
        await host.clusters.checkpoint(main)
    if req.seed:
        snapshot = "rs" + secrets.token_hex(6)
        await host.zfs.snapshot(f"{main.dataset}@{snapshot}", {
            L.P_SNAP_KIND: SEED_KIND, L.P_CREATED: f"{time.time():.3f}"})
        size = main.logical_bytes
    log.info("database %s: slot %s ready for host %s%s", db.id, slot, caller,
             f", seed snapshot {snapshot}" if snapshot else "")
    return pb.PrepareReplicaResponse(
        database_id=db.id, database_name=db.name, main_branch_id=main.id,
        postgres_version=db.version_of(main), size_class=db.size_class, snapshot=snapshot,
        slot=slot, host=host.config.advertise_host, port=main.port,
        replication_user=REPLICATION_ROLE, replication_password=password,
        estimated_bytes=size, synchronous=sync == "on")


def parse_addresses(value: str) -> dict[str, str]:
    """REPLICA_API's value as host -> address."""
    pairs = (item.split("=", 1) for item in value.split(",") if "=" in item)
    return {h: a for h, a in pairs if h and a}


async def _remember_address(host: Host, db: DatabaseRecord, caller: str, address: str) -> None:
    """Where the caller's agent answers ConfirmPrimary (agent/failsafe.py)."""
    current = (await host.zfs.get_props(db.dataset, [REPLICA_API]))[db.dataset].user.get(
        REPLICA_API, "")
    pairs = parse_addresses(current)
    if pairs.get(caller) != address:
        pairs[caller] = address
        await host.zfs.set_props(db.dataset, {REPLICA_API: ",".join(
            f"{h}={a}" for h, a in sorted(pairs.items()))})


async def _promoted_since_checkpoint(host: Host, main: BranchRecord) -> bool:
    row = await sql.query_one(
        host.clusters.socket_dir(main), main.port,
        "SELECT (SELECT timeline_id FROM pg_control_checkpoint()) <> "
        "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int")
    return bool(row and row[0])


async def release(host: Host, db: DatabaseRecord, caller: str,
                  req: pb.ReleaseReplicaRequest) -> None:
    """ReleaseReplica: the seed snapshot (if named) and, unless kept, the caller's slot."""
    main = main_of(db)
    if req.snapshot:
        name = f"{main.dataset}@{req.snapshot}"
        kind = (await host.zfs.get_props(name, [L.P_SNAP_KIND])).get(name) \
            if await host.zfs.exists(name) else None
        if kind is not None and kind.user.get(L.P_SNAP_KIND) == SEED_KIND:
            await host.zfs.destroy(name)
    if req.keep_slot or not host.clusters.accepting(main):
        return
    slot = slot_for(caller)
    await sql.query_all(
        host.clusters.socket_dir(main), main.port,
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        "WHERE slot_name = %s AND NOT active", (slot,))
    await apply_sync(host, db, main)
    log.info("database %s: dropped slot %s", db.id, slot)


_LAG = """
SELECT s.slot_name, coalesce(r.state, 'disconnected'), coalesce(r.sync_state, ''),
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(r.replay_lsn, s.restart_lsn)),
                0)::bigint,
       coalesce(extract(epoch FROM r.replay_lag), 0)::float8,
       coalesce(r.replay_lsn::text, '')
FROM pg_replication_slots s
LEFT JOIN pg_stat_replication r ON r.application_name = s.slot_name
WHERE s.slot_name LIKE %s ORDER BY 1
"""


async def lag(host: Host, main: BranchRecord) -> list[pb.ReplicaLag]:
    """Each replica's slot as the primary sees it; [] unless main runs and has any."""
    if main.parent_id or not host.clusters.accepting(main):
        return []
    # No replica slot on disk: no query (GetBranch stays a catalog read).
    if not any((host.clusters.pgdata(main) / "pg_replslot").glob(SLOT_PREFIX + "*")):
        return []
    try:
        rows = await sql.query_all(host.clusters.socket_dir(main), main.port, _LAG,
                                   (SLOT_PREFIX + "%",))
    except Exception as exc:  # a read of status: never fails GetBranch
        log.debug("replica lag of %s not read: %s", main.id, exc)
        return []
    return [pb.ReplicaLag(host_id=host_of(r[0]), state=r[1], sync_state=r[2],
                          lag_bytes=max(0, int(r[3])), lag_seconds=float(r[4]),
                          replay_lsn=r[5]) for r in rows]


async def stop_lsn(host: Host, db: DatabaseRecord, main: BranchRecord) -> str:
    """The shutdown checkpoint of a cleanly stopped main (pg_controldata)."""
    bindir = host.clusters.bindir(db, main)
    done = await command.run([str(bindir / "pg_controldata"), "-D",
                              str(host.clusters.pgdata(main))], timeout=30)
    fields = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
    state = fields.get("Database cluster state", "").strip()
    if state != "shut down":
        raise FailedPrecondition(f"database {db.name}: main did not stop cleanly ({state})")
    return fields["Latest checkpoint location"].strip()
