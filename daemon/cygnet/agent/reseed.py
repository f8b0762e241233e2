"""A replica whose data cannot follow its primary is seeded afresh beside it.

Used when an old primary cannot be rewound (docs/ha.md "Rejoining"): pg_rewind
failed (the WAL it reads back to the split is gone, say), or the rewound
copy did not start as a standby. Everything happens once the copy is a
replica's, where data only ever starts as a standby, so no step can make a
second primary:
1. the replica database carries `cygnet:reseed=needed` (demote writes it
   before it makes the datasets a replica's), so no supervision round starts
   the stale main, and the coordinator's next try seeds again;
2. PrepareReplica with a seed on the primary (the slot exists already, so the
   WAL after the seed snapshot is held), and a full stream of that snapshot
   into a new dataset beside main, which gets main's id and port but no
   kind, so the stale main stays main (replicas._records);
3. the commit: the stale main becomes a `lost-copy` with one write (the
   replica's catalog skips that kind), and the new dataset is main from then
   on; then its kind, the seed snapshot gone on both sides, and the marker;
4. the standby starts.
A failure before step 3 removes the new dataset and keeps the marker, and a
crash there leaves a dataset without a kind, removed at the next try. The
lost copy keeps the old primary's data, its rejoin snapshot included, until
the replica is removed (`cygnet replica rm`) or `zfs destroy` by hand.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from cygnet.agent import layout as L
from cygnet.agent import replicas
from cygnet.agent.host import Host
from cygnet.agent.transfer import receive
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.zfs.errors import ZfsError
from cygnet.zfs.pools import pool_status

log = logging.getLogger("cygnet.agent.replicas")


async def reseed(host: Host, stub: Any, rec: replicas.ReplicaRecord, primary_host: str,
                 prep: pb.PrepareReplicaResponse) -> replicas.ReplicaRecord:
    """Steps 2-4 for a replica marked for a reseed (call under the database's lock;
    `prep` is the primary's answer for the passfile); returns the replica on its
    new main, started as a standby."""
    if rec.main.phase:  # main still has its kind: the stale data, not yet set aside
        await _seed_beside(host, stub, rec, primary_host)
    await host.zfs.inherit(rec.db.dataset, replicas.P_RESEED)
    fresh = await replicas.find(host, rec.db.id)
    assert fresh is not None
    if not host.mounted(fresh.main):
        await host.zfs.mount(fresh.main.dataset)
    replicas.write_passfile(host, fresh.main, prep)
    await replicas.start_standby(host, fresh, fresh=True)
    return fresh


async def _seed_beside(host: Host, stub: Any, rec: replicas.ReplicaRecord, primary_host: str
                       ) -> None:
    seed: pb.PrepareReplicaResponse = await stub.PrepareReplica(replicas.prepare_request(
        host.config, rec.db.id, seed=True), timeout=60)
    stale = rec.main.dataset
    fresh = f"{rec.db.dataset}/{rec.main.id}-seed-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    try:
        await _drop_uncommitted(host, rec)
        await _check_room(host, rec, seed)
        started = time.monotonic()
        with host.receiving(fresh):
            done = await receive(stub, pb.SendSnapshotRequest(
                database=seed.database_id, branch_id=seed.main_branch_id,
                snapshot=seed.snapshot), fresh, peer=primary_host, attempts=3)
        await host.zfs.destroy(f"{fresh}@{seed.snapshot}")
        # main's identity, still without a kind: the stale main stays main until the commit.
        await host.zfs.set_props(fresh, {
            L.P_ID: seed.main_branch_id, L.P_NAME: "main", L.P_DATABASE: seed.database_id,
            L.P_PORT: str(rec.main.port), L.P_CREATED: f"{time.time():.3f}"})
    except BaseException:
        if await host.zfs.exists(fresh):
            await host.zfs.destroy(fresh, recursive=True)
        await replicas.release(stub, seed, keep_slot=True)
        raise
    # The commit: from this write on the new dataset is main (replicas._records).
    await host.zfs.set_props(stale, {L.P_KIND: replicas.KIND_LOST})
    await host.zfs.set_props(fresh, {L.P_KIND: replicas.KIND_MAIN})
    try:  # a mount less; it stays readable with `zfs mount`
        await host.zfs.set_props(stale, {"canmount": "noauto"})
    except ZfsError as exc:
        log.info("%s stays mounted: %s", stale, exc)
    await replicas.release(stub, seed, keep_slot=True)
    log.warning("database %s: replica seeded afresh from %s (%d MB in %.1fs); the data it "
                "replaces is kept as %s", rec.db.id, primary_host, done.sent_bytes // 10**6,
                time.monotonic() - started, stale)


async def _drop_uncommitted(host: Host, rec: replicas.ReplicaRecord) -> None:
    """Destroys the seeds of an earlier try that a crash cut short before its commit
    (datasets beside the stale main that have no kind)."""
    await host.catalog()
    assert host.datasets is not None
    for ds in list(host.datasets.datasets().values()):
        if ds.name.startswith(rec.db.dataset + "/") and "@" not in ds.name \
                and ds.name != rec.main.dataset and L.P_KIND not in ds.user:
            log.warning("database %s: removing %s, a seed a crash left", rec.db.id, ds.name)
            await host.zfs.destroy(ds.name, recursive=True)


async def _check_room(host: Host, rec: replicas.ReplicaRecord,
                      prep: pb.PrepareReplicaResponse) -> None:
    free = (await pool_status(host.zfs.runner, rec.db.pool)).free_bytes
    replicas.require_seed_room(host, free, prep, (
        f"the old primary of {rec.db.name} could not be rewound, and pool {rec.db.pool} "
        "has no room to seed a new copy beside it"))
