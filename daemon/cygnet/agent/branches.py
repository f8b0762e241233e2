"""Branch lifecycle: create (checkpoint, snapshot, clone, fix up, start), start, stop, destroy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable

from cygnet.agent import archive, archive_points, masked_goldens
from cygnet.agent import layout as L
from cygnet.agent.events import EventKind, emit
from cygnet.agent.host import Host
from cygnet.agent.inventory import (
    BranchRecord,
    DatabaseRecord,
    Inventory,
    SnapshotRecord,
    branch_props,
)
from cygnet.agent.timing import StepTimer
from cygnet.agent.upgrade import check_parent, upgrade_clone
from cygnet.errors import AlreadyExists, CygnetError, FailedPrecondition, NotFound
from cygnet.names import is_id, shown, validate_name
from cygnet.states import Desired
from cygnet.zfs import DatasetNotFound, HasDependents

log = logging.getLogger("cygnet.agent")

# Makes a new branch's dataset (with all its properties, in one call) and fills
# it, instead of cloning a snapshot (a restore does this); returns how many
# subscriptions its data may hold.
Populate = Callable[[BranchRecord], Awaitable[int]]


def find_snapshot(branch: BranchRecord, ref: str) -> SnapshotRecord:
    """A user snapshot by id (an id-shaped ref) or else by name."""
    by_id = is_id(ref, "sn")
    for snap in branch.snapshots:
        if (snap.id if by_id else snap.name) == ref and snap.kind == "user":
            return snap
    raise NotFound(f"snapshot {shown(ref)} not found on branch {branch.name!r}")


def find_branch_by_request(inv: Inventory, request_id: str) -> BranchRecord | None:
    if not request_id:
        return None
    return next((b for b in inv.branches() if b.request_id == request_id), None)


async def branch_point(host: Host, parent: BranchRecord, label: str) -> tuple[str, int]:
    """A fresh snapshot of `parent`'s current state, and its subscription count.

    A running parent gets a CHECKPOINT first so the clone's crash recovery has
    almost nothing to replay; the snapshot itself is atomic and includes pg_wal.
    """
    return await take_snapshot(host, parent, L.new_id("sn"), label, "branch-point", "")


async def take_snapshot(host: Host, branch: BranchRecord, snap_id: str, name: str, kind: str,
                        request_id: str) -> tuple[str, int]:
    """CHECKPOINT if running, then `zfs snapshot` with its properties set atomically.

    Returns the snapshot and the subscription count (1 when the branch is
    stopped and the count unknown: callers then take the safe path).
    """
    snapshot = f"{branch.dataset}@{snap_id}"
    # CHECKPOINT and the WAL's end around the snapshot, on one connection.
    async with archive_points.around_snapshot(host, branch) as probe:
        subscriptions = probe.subscriptions
        props = {L.P_ID: snap_id, L.P_NAME: name, L.P_SNAP_KIND: kind,
                 L.P_CREATED: f"{time.time():.3f}", L.P_REQUEST: request_id}
        if subscriptions >= 0:
            props[L.P_SUBS] = str(subscriptions)
        await host.zfs.snapshot(snapshot, props)
    await archive_points.record(host, snapshot, probe.point)
    return snapshot, abs(subscriptions)


async def create_branch(host: Host, inv: Inventory, db: DatabaseRecord, name: str,
                        parent_ref: str, snapshot_ref: str, request_id: str,
                        populate: Populate | None = None, upgrade_to: str = "",
                        suspend_after: int = -1, expires_at: float = 0.0) -> BranchRecord:
    """Must run under the database's lock, with `inv` and `db` loaded under it.

    With `populate`, the branch is a new dataset filled by it (no origin).
    With `upgrade_to`, the clone is upgraded to that major first (agent/upgrade.py)."""
    name = validate_name("name", name)
    if any(b.name == name for b in db.branches.values()):
        raise AlreadyExists(f"branch {name!r} already exists in database {db.name!r}")
    parent = db.branch(parent_ref)
    if parent.phase != L.PHASE_READY:
        raise FailedPrecondition(f"parent branch {parent.name!r} is {parent.phase}")
    target = check_parent(db, parent, upgrade_to, host.config.postgres_root)
    host.ensure_headroom(inv, db.pool)
    port = host.ports.reserve()
    branch = BranchRecord(L.new_id("br"), name, db.id, parent.id, "", None, port, Desired.RUNNING,
                          L.PHASE_CREATING, time.time(), request_id, 0, 0)
    branch.dataset = L.branch(db.pool, db.id, branch.id)
    branch.expires_at = expires_at  # written with the clone's other properties
    branch.suspend_after = suspend_after  # idle timeout (agent/scale.py); -1: the host's
    own_snapshot = not snapshot_ref and populate is None
    timer = StepTimer()
    try:
        with timer.step("snapshot"):
            subscriptions = 1 if populate is not None else await _take_origin(
                host, parent, branch, snapshot_ref, upgrade=bool(target))
        origin = branch.origin or ""
        try:
            with timer.step("clone"):
                if populate is None:
                    await host.zfs.clone(origin, branch.dataset, branch_props(branch))
                else:
                    subscriptions = await populate(branch)
            if target:
                with timer.step("upgrade"):
                    await upgrade_clone(host, db, branch, target, subscriptions)
                subscriptions = 0  # disabled by the clone's first start
            with timer.step("start"):
                await _start_and_mark_ready(host, db, branch, subscriptions)
        except BaseException as exc:
            # A domain failure says what happened; only a surprise needs a traceback.
            log.warning("create branch %s failed (%s); removing what was made", branch.id, exc,
                        exc_info=not isinstance(exc, CygnetError))
            await destroy_branch(host, branch, drop_origin=own_snapshot)
            raise
    except BaseException:
        host.ports.release(port)
        raise
    host.ports.commit(port)
    log.info("branch %s/%s (%s) ready in %s", db.name, name, branch.id, timer)
    branch.phase = L.PHASE_READY
    for kind in (EventKind.CREATED, EventKind.READY):
        emit(kind, database_id=db.id, branch_id=branch.id, database=db.name, branch=name,
             reason=f"child of {parent.name}")
    return branch


async def _take_origin(host: Host, parent: BranchRecord, branch: BranchRecord,
                       snapshot_ref: str, *, upgrade: bool) -> int:
    """Sets the branch's origin (the named snapshot, or a new branch point) and its
    fork; returns the parent's subscription count there."""
    snap = find_snapshot(parent, snapshot_ref) if snapshot_ref else None
    if snap is not None:
        # Unknown counts take the safe path: start with workers off first.
        origin, subscriptions = snap.dataset, abs(snap.subscriptions)
    else:
        origin, subscriptions = await branch_point(host, parent, f"branch {branch.name}")
    branch.origin = origin
    # Where its WAL leaves its parent's (agent/archive.py). An upgrade has
    # none: its new major cannot replay the parent's WAL (new system id),
    # so its history starts at its own first WAL, as a masked branch's does.
    if not upgrade:
        branch.fork = archive_points.fork_value(parent, origin, snap)
    return subscriptions


async def _start_and_mark_ready(host: Host, db: DatabaseRecord, branch: BranchRecord,
                                subscriptions: int) -> None:
    """Starts the clone while ZFS records it as ready: the two take similar time.

    Marking it ready before Postgres answers is safe: if the start fails, the
    caller destroys the branch; if the daemon dies meanwhile, the reconciler
    starts a ready branch that should run, and a retry finds it by request id.
    """
    results = await asyncio.gather(
        host.clusters.start_clone(branch, db, subscriptions),
        host.zfs.set_props(branch.dataset, {L.P_PHASE: L.PHASE_READY}),
        host.refresh_space(branch),  # for the reply; a fresh clone's figures hold
        return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def destroy_branch(host: Host, branch: BranchRecord, *, drop_origin: bool = True) -> None:
    """Stops the branch, destroys its dataset and snapshots, and its own branch point."""
    if await host.zfs.exists(branch.dataset):
        await host.mark_deleting(branch.dataset)  # works on a full pool
        if host.clusters.live(branch) is not None:
            # Its data goes next: a shutdown checkpoint would be wasted, and on a
            # full dataset it cannot be written at all.
            await host.clusters.stop(branch, "immediate")
        await masked_goldens.drop_of(host, branch)  # they clone its snapshots
        await host.zfs.destroy(branch.dataset, recursive=True)
    await asyncio.to_thread(archive.drop_spool, host.config, branch)
    if drop_origin and branch.origin:
        await drop_branch_point(host, branch.origin)
    shutil.rmtree(host.clusters.socket_dir(branch), ignore_errors=True)
    host.ports.release(branch.port)


async def drop_branch_point(host: Host, snapshot: str) -> None:
    """Destroys a snapshot Cygnet took to branch from, once no clone depends on it."""
    try:
        props = await host.zfs.get_props(snapshot, [L.P_SNAP_KIND])
    except DatasetNotFound:
        return
    ds = props.get(snapshot)
    if ds is not None and ds.user.get(L.P_SNAP_KIND) == "branch-point":
        with contextlib.suppress(HasDependents, DatasetNotFound):
            await host.zfs.destroy(snapshot)


async def delete_branch(host: Host, db: DatabaseRecord, ref: str, cascade: bool) -> list[str]:
    """Must run under the database's lock, with `db` freshly loaded."""
    branch = db.branch(ref)
    if branch.is_main:
        raise FailedPrecondition("the main branch goes with its database: use DeleteDatabase")
    descendants = db.descendants(branch.id)
    if descendants and not cascade:
        names = ", ".join(sorted(b.name for b in descendants))
        raise FailedPrecondition(
            f"branch {branch.name!r} has child branches ({names}); delete them first "
            "or ask for cascade")
    deleted = []
    for victim in [*descendants, branch]:
        await destroy_branch(host, victim)
        deleted.append(victim.id)
        emit(EventKind.DELETED, database_id=db.id, branch_id=victim.id, database=db.name,
             branch=victim.name)
    return deleted


async def set_running(host: Host, db: DatabaseRecord, branch: BranchRecord, running: bool
                      ) -> None:
    """StartBranch / StopBranch: records the desired state first, so it survives a crash."""
    if branch.phase != L.PHASE_READY:
        raise FailedPrecondition(f"branch {branch.name!r} is {branch.phase}")
    desired = Desired.RUNNING if running else Desired.STOPPED
    if branch.desired != desired:
        await host.zfs.set_props(branch.dataset, {L.P_DESIRED: desired})
        branch.desired = desired
    if running:
        await host.clusters.start(branch, db)
    else:
        await host.clusters.stop(branch, "fast")
