"""The source's side of a move (docs/ha.md, "Moving databases").

The target's agent pulls (agent/moves.py). Each round it calls PrepareMove:
a snapshot named after the round on every dataset of the database (branches,
masked copies: whatever a clone may need as its origin), and the lineage as
it stands, parents before their clones, each dataset's snapshots oldest first
(by `createtxg`: two snapshots can share a second of `creation`). The final
round first stops every running branch: its desired state becomes `stopped`
(so neither the supervisor nor a restarted cygnetd starts it behind the
move's back), and the branches it stopped are recorded on the database's
dataset (`cygnet:move-stopped`), so EndMove(moved=false) starts exactly them
again, even after a restart. SendMoveStream sends one snapshot, full or
incremental from a snapshot of this dataset or (a clone) of its origin.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from cygnet.agent import layout as L
from cygnet.agent import replica_source
from cygnet.agent.events import EventKind, emit
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.agent.service import AgentService, BranchRef
from cygnet.agent.timing import StepTimer
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.concurrency import bounded
from cygnet.errors import FailedPrecondition, InvalidArgument, NotFound
from cygnet.names import shown
from cygnet.postgres import sql
from cygnet.states import Desired
from cygnet.zfs import Dataset, streams
from cygnet.zfs.errors import ZfsError

log = logging.getLogger("cygnet.agent.moves")

MOVE_KIND = "move"  # cygnet:snapshot-kind of a round's snapshot
P_MOVE_STOPPED = "cygnet:move-stopped"  # on the database: branch ids the final round stopped
ZFS_AT_ONCE = 8  # a round's snapshots, or the stop's marks, side by side


def _listing_order(db_dataset: str, listing: dict[str, Dataset]) -> list[str]:
    """The database's filesystems, each after the dataset holding its origin."""
    own = sorted(n for n, ds in listing.items()
                 if n.startswith(db_dataset + "/") and not ds.is_snapshot)
    done: list[str] = []
    placed: set[str] = set()
    while len(done) < len(own):
        progressed = False
        for name in own:
            origin = (listing[name].origin or "").split("@")[0]
            if name in placed or (origin in own and origin not in placed):
                continue
            done.append(name)
            placed.add(name)
            progressed = True
        if not progressed:  # an origin cycle cannot happen in ZFS; never loop for ever
            raise FailedPrecondition(f"the datasets of {db_dataset} have tangled origins")
    return done


def _cygnet(ds: Dataset) -> dict[str, str]:
    return {k: v for k, v in ds.user.items() if k.startswith("cygnet:")}


def plan_of(db: DatabaseRecord, listing: dict[str, Dataset], round_name: str,
            running: set[str]) -> pb.MovePlan:
    base = db.dataset
    plan = pb.MovePlan(database_id=db.id, database_name=db.name, postgres_version=db.version,
                       round=round_name, dataset=base,
                       used_bytes=listing[base].number("used") if base in listing else 0,
                       quota_bytes=listing[base].number("quota") if base in listing else 0)
    plan.properties.update(_cygnet(listing[base]) if base in listing else {})
    for name in _listing_order(base, listing):
        ds = listing[name]
        leaf = name[len(base) + 1:]
        out = pb.MoveDataset(name=leaf, branch_id=ds.user.get(L.P_ID, ""),
                             running=ds.user.get(L.P_ID, "") in running,
                             referenced_bytes=ds.number("referenced"))
        out.properties.update(_cygnet(ds))
        origin = ds.origin or ""
        if origin.startswith(base + "/"):
            out.origin_dataset, _, out.origin_snapshot = origin[len(base) + 1:].partition("@")
        snaps = sorted((s for s in listing.values() if s.name.startswith(name + "@")),
                       key=lambda s: s.number("createtxg"))
        for s in snaps:
            snap = out.snapshots.add(name=s.name.split("@", 1)[1])
            snap.properties.update(_cygnet(s))
        plan.datasets.append(out)
    return plan


def _newest_snapshot(name: str) -> Dataset:
    """A round's snapshot as a listing would show it: its dataset's newest."""
    return Dataset(name, native={"type": "snapshot", "createtxg": str(2**63 - 1)},
                   user={L.P_SNAP_KIND: MOVE_KIND})


def _refuse_replicas(host: Host, db: DatabaseRecord) -> None:
    main = db.main
    if main is None:
        raise NotFound(f"database {db.name} has no main branch")
    slots = host.clusters.pgdata(main) / "pg_replslot"
    if any(slots.glob(replica_source.SLOT_PREFIX + "*")):
        raise FailedPrecondition(f"database {db.name} has replicas: a move takes no replica "
                                 "along; remove them first (cygnet replica rm)")


async def _checkpoint(host: Host, running: list[BranchRecord]) -> None:
    """Dirty buffers reach the disk, so this round carries them, not the final one
    (and a checkpoint while the branch still serves makes its shutdown one short)."""
    for b in running:
        try:
            await sql.query_all(host.clusters.socket_dir(b), b.port, "CHECKPOINT")
        except Exception as exc:
            log.debug("checkpoint of %s before a move round: %s", b.id, exc)


async def _stop_running(host: Host, db: DatabaseRecord, steps: StepTimer) -> list[str]:
    """The final round's stop: desired=stopped first (recorded), then a CHECKPOINT
    while the database still serves (the less is dirty after it, the shorter the
    one taken once the sessions are gone), then a quiesced immediate stop. Should
    that fail, the stop is a fast one, and the move fails (EndMove starts the
    database again)."""
    running = [b for b in db.branches.values() if host.clusters.live(b) is not None]
    with steps.step("marks"):
        found = await host.zfs.get_props(db.dataset, [P_MOVE_STOPPED])
        before = found[db.dataset].user.get(P_MOVE_STOPPED, "") if db.dataset in found else ""
        ids = sorted({*filter(None, before.split(",")), *(b.id for b in running)})
        await host.zfs.set_props(db.dataset, {P_MOVE_STOPPED: ",".join(ids) or "-"})
        await bounded(ZFS_AT_ONCE, (
            host.zfs.set_props(b.dataset, {L.P_DESIRED: Desired.STOPPED})
            for b in running if b.desired != Desired.STOPPED))
    # One: more CHECKPOINTs shorten the shutdown's (2 GB under pgbench writes:
    # 0.18-0.41 s against 0.53 s) but grow the final round by more, as the writes
    # during them land in it (client downtime 1.24-1.59 s against 1.21 s).
    with steps.step("checkpoint"):
        await _checkpoint(host, running)
    # Then no fast stop: with archiving on it writes out the rest of the current WAL
    # segment (up to 16 MiB, which the final round then carries) and waits for the
    # archiver, 0.2-0.4 s on zfs-fuse. A smart shutdown that refuses new clients,
    # sessions ended, a CHECKPOINT and an immediate stop lose no commit, and the
    # target's start replays next to nothing.
    with steps.step("quiesced stop"):
        await asyncio.gather(*(host.clusters.quiesced_stop(b) for b in running))
    return ids


async def prepare(service: AgentService, req: pb.PrepareMoveRequest) -> pb.MovePlan:
    """PrepareMove: a round's snapshot on every dataset, and the lineage."""
    host = service.host
    db_id = await service.database_id(req.database)
    async with host.db_locks[db_id]:
        db, _ = await service.read_database(db_id, snapshots=False)
        _refuse_replicas(host, db)
        running = {b.id for b in db.branches.values() if host.clusters.live(b) is not None}
        # Read before a final round's stop (nothing the plan carries changes under
        # the lock but the round's snapshots, added below as made): the database
        # is down from the stop until it starts on the target.
        listing = await host.zfs.get_props(db.dataset, ["all"], recursive=True)
        steps = StepTimer()
        if req.final:
            running = set(await _stop_running(host, db, steps))
        else:
            await _checkpoint(host, [b for b in db.branches.values() if b.id in running])
        made = [snap for name in _listing_order(db.dataset, listing)
                if (snap := f"{name}@{req.round}") not in listing]
        with steps.step("snapshots"):  # side by side: ZFS may take them in one txg
            await bounded(ZFS_AT_ONCE, (
                host.zfs.snapshot(snap, {L.P_SNAP_KIND: MOVE_KIND}) for snap in made))
        listing |= {snap: _newest_snapshot(snap) for snap in made}
    if req.final:
        log.info("move of %s: final stop %s", db.id, steps)
    return plan_of(db, listing, req.round, running)


def _dataset_name(db: DatabaseRecord, leaf: str, field: str) -> str:
    if not leaf or "/" in leaf or "@" in leaf:
        raise InvalidArgument(field, f"{shown(leaf)} is not a dataset of the database")
    return f"{db.dataset}/{leaf}"


async def send(service: AgentService, req: pb.SendMoveStreamRequest
               ) -> AsyncIterator[pb.TransferChunk]:
    """SendMoveStream: one snapshot of one of the database's datasets."""
    host = service.host
    db, _ = await service.read_database(await service.database_id(req.database),
                                        snapshots=False)
    snap = f"{_dataset_name(db, req.dataset, 'dataset')}@{req.snapshot}"
    base = ""
    if req.base_snapshot:
        base = f"{_dataset_name(db, req.base_dataset or req.dataset, 'base_dataset')}" \
               f"@{req.base_snapshot}"
    found = await host.zfs.get_props(snap, ["referenced"]) if await host.zfs.exists(snap) else {}
    if snap not in found:
        raise NotFound(f"snapshot {shown(req.dataset)}@{shown(req.snapshot)} of {db.name} "
                       "not found")
    size, sent = found[snap].number("referenced"), 0
    async for data in streams.send(snap, base):
        sent += len(data)
        yield pb.TransferChunk(data=data, sent_bytes=sent, estimated_bytes=size)


async def end(service: AgentService, req: pb.EndMoveRequest) -> pb.EndMoveResponse:
    """EndMove: moved, this host's copy goes; not moved, it runs here again as before."""
    host = service.host
    db_id = await service.database_id(req.database)
    async with host.db_locks[db_id]:
        db, _ = await service.read_database(db_id, snapshots=False)
        if req.moved:
            # A source stopped by its final round; otherwise the target of a move
            # that failed after it started the database here.
            stopped = (await host.zfs.get_props(db.dataset, [P_MOVE_STOPPED]))[db.dataset] \
                .user.get(P_MOVE_STOPPED)
            await _destroy(host, db)
            emit(EventKind.DELETED, database_id=db.id, database=db.name,
                 reason="moved to another host" if stopped else
                 "the copy a failed move started here is removed")
            return pb.EndMoveResponse(database_id=db.id)
        listing = await host.zfs.get_props(db.dataset, ["all"], recursive=True)
        for name, ds in sorted(listing.items()):
            if ds.is_snapshot and ds.user.get(L.P_SNAP_KIND) == MOVE_KIND:
                await host.zfs.destroy(name)
        stopped = _cygnet(listing[db.dataset]).get(P_MOVE_STOPPED, "") \
            if db.dataset in listing else ""
    restarted = []
    for branch_id in filter(lambda x: x and x != "-", stopped.split(",")):
        if branch_id in db.branches:
            await service.set_running(BranchRef(branch_id=branch_id, field="database"), True,
                                      "")
            restarted.append(branch_id)
    if stopped:
        await host.zfs.inherit(db.dataset, P_MOVE_STOPPED)
    log.info("database %s stays here; restarted %s", db.id, restarted or "nothing")
    return pb.EndMoveResponse(database_id=db.id, restarted_branch_ids=restarted)


async def _destroy(host: Host, db: DatabaseRecord) -> None:
    """Stops whatever still runs and destroys the database's datasets here."""
    for b in db.branches.values():
        if host.clusters.live(b) is not None:
            await host.clusters.stop(b, "immediate")
    await host.mark_deleting(db.dataset)
    try:
        await host.zfs.destroy(db.dataset, recursive=True)
    except ZfsError:
        if await host.zfs.exists(db.dataset):
            raise
    for b in db.branches.values():
        if b.port:
            host.ports.release(b.port)
    host.known.pop(db.id, None)
    log.info("database %s: this host's copy is destroyed (moved)", db.id)
