"""Point-in-time branches and restores in place (docs/durability.md).

A point-in-time branch is the nearest snapshot at or before the target (by
its recorded WAL end, agent/history.py) cloned, replayed to the target with
WAL chosen by LSN range along the source's ancestry (agent/recovery.py),
promoted onto a new timeline, and started. Its own archive starts at the
switch point and continues the source's history below it.

A restore in place does the same into a replacement dataset, then puts it
under the branch's identity with the swap primitive (agent/swap.py): the
connection string stays, the replaced data is kept as `<name>_before_<time>`,
and the branch's archive starts a new generation.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from cygnet.agent import archive, history, recovery, swap
from cygnet.agent import layout as L
from cygnet.agent.branches import destroy_branch
from cygnet.agent.events import EventKind, emit
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, Inventory, branch_props
from cygnet.agent.recovery import Target
from cygnet.agent.timing import StepTimer
from cygnet.errors import AlreadyExists, CygnetError, FailedPrecondition
from cygnet.names import validate_name
from cygnet.postgres import fixup
from cygnet.postgres.sql import connect
from cygnet.states import Desired
from cygnet.wal import spool
from cygnet.wal.points import WalPoint

log = logging.getLogger("cygnet.agent")

SWITCH_WAIT = 30.0  # seconds for a forced segment switch to reach the repository


async def ensure_covered(host: Host, db: DatabaseRecord, source: BranchRecord,
                         target: Target) -> None:
    """A target newer than the archive: each running, archiving branch of the
    source's chain (the source, or the ancestor that holds its history) commits
    a marker transaction and switches segments, so the repository holds every
    commit up to now and one after the target; then waits for the ingestion."""
    hist = await asyncio.to_thread(history.load, host.config, db, source)
    latest = hist.latest
    if latest is not None and (latest.end_time >= target.time if target.time
                               else target.lsn and latest.end_lsn >= target.lsn):
        return
    for link in hist.chain:
        branch = db.branches.get(link.generation.branch_id)
        if (branch is not None and archive.enabled(db, branch)
                and link.generation.gen == archive.generation(branch)
                and host.clusters.live(branch) is not None):
            await _switch(host, branch)


async def _switch(host: Host, branch: BranchRecord) -> None:
    async with await connect(host.clusters.socket_dir(branch), branch.port) as conn:
        await conn.execute("SELECT pg_catalog.txid_current()")
        cur = await conn.execute("SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal())")
        row = await cur.fetchone()
    if row is None:
        return
    archive.poke()
    repo = archive.repository(host.config)
    await asyncio.to_thread(spool.wait_ingested, repo, branch.id, archive.generation(branch),
                            row[0], SWITCH_WAIT)


async def plan(host: Host, db: DatabaseRecord, source: BranchRecord, target: Target
               ) -> tuple[history.History, history.Candidate]:
    if target.time and target.time > time.time():
        hist = await asyncio.to_thread(history.load, host.config, db, source)
        history.choose(hist, target)  # refuses, naming the window
    await ensure_covered(host, db, source, target)
    hist = await asyncio.to_thread(history.load, host.config, db, source)
    return hist, history.choose(hist, target)


async def create_branch_at(host: Host, inv: Inventory, db: DatabaseRecord, name: str,
                           source_ref: str, target: Target, request_id: str) -> BranchRecord:
    """Must run under the database's lock, with `inv` and `db` loaded (with snapshots)."""
    name = validate_name("name", name)
    if any(b.name == name for b in db.branches.values()):
        raise AlreadyExists(f"branch {name!r} already exists in database {db.name!r}")
    source = db.branch(source_ref)
    if source.phase != L.PHASE_READY:
        raise FailedPrecondition(f"branch {source.name!r} is {source.phase}")
    timer = StepTimer()
    with timer.step("plan"):
        hist, chosen = await plan(host, db, source, target)
    host.ensure_headroom(inv, db.pool)
    port = host.ports.reserve()
    branch = BranchRecord(L.new_id("br"), name, db.id, source.id, "", chosen.snapshot.dataset,
                          port, Desired.RUNNING, L.PHASE_CREATING, time.time(), request_id, 0, 0)
    branch.dataset = L.branch(db.pool, db.id, branch.id)
    try:
        with timer.step("clone"):
            await host.zfs.clone(chosen.snapshot.dataset, branch.dataset, branch_props(branch))
        try:
            with timer.step("recover"):
                start = await recovery.recover(host, db, branch, hist.files(chosen), target,
                                               workers=chosen.snapshot.subscriptions == 0)
            point = WalPoint(start, start, time.time())
            branch.fork = f"{archive.generation(source)}:{point.text()}"
            with timer.step("settle"):
                await host.zfs.set_props(branch.dataset, {L.P_FORK: branch.fork,
                                                          L.P_PHASE: L.PHASE_READY})
                await _settle(host, db, branch, start, chosen.snapshot.subscriptions)
        except BaseException as exc:
            log.warning("point-in-time branch %s failed (%s); removing what was made",
                        branch.id, exc, exc_info=not isinstance(exc, CygnetError))
            await destroy_branch(host, branch, drop_origin=False)
            raise
    except BaseException:
        host.ports.release(port)
        raise
    host.ports.commit(port)
    branch.phase = L.PHASE_READY
    await host.refresh_space(branch)
    log.info("branch %s/%s (%s) recovered to %s from snapshot %s in %s", db.name, name,
             branch.id, target.describe(), chosen.snapshot.dataset, timer)
    for kind in (EventKind.CREATED, EventKind.READY):
        emit(kind, database_id=db.id, branch_id=branch.id, database=db.name, branch=name,
             reason=f"{source.name} at {target.describe()}")
    return branch


async def _settle(host: Host, db: DatabaseRecord, branch: BranchRecord, start: int,
                  subscriptions: int) -> None:
    """From the recovery's settings to the branch's own: a restart when it archives
    (archive_mode) or had subscriptions to disarm, else a reload."""
    pgdata = host.clusters.pgdata(branch)
    if subscriptions:
        await fixup.disable_subscriptions(host.clusters.socket_dir(branch), branch.port)
    if archive.enabled(db, branch):
        recovery.mark_for_archive(pgdata, start)
    if subscriptions or archive.enabled(db, branch):
        await host.clusters.stop(branch, "fast")
        await host.clusters.start(branch, db)
    else:
        host.clusters.refresh(branch, db)


async def restore_in_place(host: Host, db: DatabaseRecord, branch: BranchRecord,
                           target: Target) -> tuple[BranchRecord, BranchRecord | None]:
    """Rolls `branch` back to `target`; returns it and the branch keeping the old data.

    Must run under the database's lock with `db` loaded (with snapshots)."""
    if branch.phase != L.PHASE_READY:
        raise FailedPrecondition(f"branch {branch.name!r} is {branch.phase}")
    hist, chosen = await plan(host, db, branch, target)
    replacement = L.branch(db.pool, db.id, branch.id, secrets.token_hex(3))
    port = host.ports.reserve()
    # The recovery runs as a hidden stand-in (its own id, port and socket) while
    # the branch keeps serving; a crash leaves a `creating` dataset the reconciler removes.
    temp = BranchRecord(L.new_id("br"), f"{branch.name}-restoring", db.id, branch.id,
                        replacement, chosen.snapshot.dataset, port, Desired.STOPPED,
                        L.PHASE_CREATING, time.time(), "", 0, 0, version=branch.version)
    try:
        await host.zfs.clone(chosen.snapshot.dataset, replacement, branch_props(temp))
        try:
            start = await recovery.recover(host, db, temp, hist.files(chosen), target,
                                           workers=False)
            await host.clusters.stop(temp, "fast")
            recovery.mark_for_archive(host.clusters.pgdata(temp), start)
        except BaseException:
            await destroy_branch(host, temp, drop_origin=False)
            raise
    finally:
        host.ports.release(port)
    old_gen = archive.generation(branch)
    archive.rewind(host.config, db, branch, WalPoint(start, start, time.time()),
                   (branch.id, old_gen))
    await host.zfs.set_props(replacement, {L.P_WAL_GEN: str(branch.wal_gen)})
    if branch.fork:
        await host.zfs.set_props(replacement, {L.P_FORK: branch.fork})
    if branch.archive:
        await host.zfs.set_props(replacement, {L.P_ARCHIVE: branch.archive})
    keep_as = swap.kept_name(branch.name, {b.name for b in db.branches.values()})

    # The replacement was fixed up for its recovery; a plain start keeps its
    # archive_status (the new timeline's files queued above).
    kept = await swap.swap(host, db, branch, replacement, keep_as=keep_as,
                           start=host.clusters.start)
    emit(EventKind.RESTORED, database_id=db.id, branch_id=branch.id, database=db.name,
         branch=branch.name, reason=f"restored in place to {target.describe()}"
         + (f"; the replaced state kept as {kept.name}" if kept else ""))
    if kept is not None:
        emit(EventKind.CREATED, database_id=db.id, branch_id=kept.id, database=db.name,
             branch=kept.name, reason=f"the state of {branch.name} before a restore")
    return branch, kept
