"""PromoteBranch: a branch's data becomes its database's main.

Main keeps its identity (id, name, port, password, endpoint), so every
connection string for main stays the same; the promoted branch's data moves
under it through the swap primitive (agent/swap.py), which `zfs promote`s it
so that the old main becomes a clone of it. The old main's data stays as a
stopped branch `main_before_<time>`, or is destroyed if asked. The promoted
branch's own id and port are gone afterwards. A promoted upgrade-rehearsal
branch gives the database its major (docs/versions.md).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass

from cygnet.agent import archive_points, swap
from cygnet.agent import layout as L
from cygnet.agent.events import EventKind, emit
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.agent.protection import guard
from cygnet.errors import FailedPrecondition
from cygnet.states import Desired
from cygnet.zfs import DatasetNotFound

log = logging.getLogger("cygnet.agent")


@dataclass
class Promoted:
    main: BranchRecord
    old_main: BranchRecord | None  # None when dropped
    seconds_down: float  # main's stop until it answers on the new data


def _ancestors(db: DatabaseRecord, branch: BranchRecord) -> list[BranchRecord]:
    """The branch's parents up to (not including) main, nearest first."""
    out: list[BranchRecord] = []
    current = branch
    while current.parent_id and current.parent_id in db.branches:
        parent = db.branches[current.parent_id]
        if parent.is_main:
            return out
        out.append(parent)
        current = parent
    raise FailedPrecondition(f"branch {branch.name!r} does not descend from main")


def check_drop(db: DatabaseRecord, main: BranchRecord, branch: BranchRecord,
               chain: list[BranchRecord]) -> None:
    """Dropping the old main destroys the snapshots `zfs promote` leaves on it (those
    newer than the promoted line's branch point): refuse if branches were made from
    them, naming them. Checks only."""
    top = chain[-1] if chain else branch
    point = next((s for s in main.snapshots if s.dataset == top.origin), None)
    if point is None:
        raise FailedPrecondition(f"branch {branch.name!r}: its origin on main is not known")
    staying = {s.dataset for s in main.snapshots if s.created > point.created}
    blocking = sorted(b.name for b in db.branches.values() if b.origin in staying)
    if blocking:
        raise FailedPrecondition(
            f"the old main has branches made after {branch.name!r} was ({', '.join(blocking)}): "
            "promote without drop_old_main (--drop-old), or delete them first")
    guard([main], "dropping the old main", False, db.name)


async def promote_branch(host: Host, db: DatabaseRecord, branch: BranchRecord,
                         drop_old_main: bool) -> Promoted:
    """Must run under the database's lock, with `db` freshly loaded with snapshots."""
    main = db.main
    if main is None:
        raise FailedPrecondition(f"database {db.name!r} has no main branch")
    if branch.is_main:
        raise FailedPrecondition(f"branch {branch.name!r} is main already")
    for b in (main, branch):
        if b.phase != L.PHASE_READY:
            raise FailedPrecondition(f"branch {b.name!r} is {b.phase}")
    chain = _ancestors(db, branch)
    if drop_old_main:
        check_drop(db, main, branch, chain)
    keep_as = "" if drop_old_main else swap.kept_name(
        main.name, {b.name for b in db.branches.values()})
    gone_id, gone_port, gone_name = branch.id, branch.port, branch.name
    await host.zfs.set_props(branch.dataset, {L.P_PHASE: L.PHASE_RESETTING})
    await host.clusters.stop(branch, "fast")
    await archive_points.adopt(host, db, main, branch)  # main's WAL history follows its data
    back: list[float] = []  # when main answers again, on its new data

    async def start(b: BranchRecord, d: DatabaseRecord) -> None:
        await host.clusters.start(b, d)
        back.append(time.monotonic())

    down = time.monotonic()  # main stops first thing in the swap
    try:
        kept = await swap.swap(host, db, main, branch.dataset, keep_as=keep_as, start=start)
    except BaseException:
        await _restore_if_not_committed(host, db, branch)
        raise
    seconds = (back[0] if back else time.monotonic()) - down
    host.ports.release(gone_port)
    shutil.rmtree(host.config.run_dir / "s" / gone_id, ignore_errors=True)
    log.info("database %s: branch %s (%s) promoted to main in %.3fs (old main %s)", db.name,
             gone_name, gone_id, seconds, kept.name if kept else "dropped")
    emit(EventKind.PROMOTED, database_id=db.id, branch_id=main.id, database=db.name,
         branch=main.name, reason=f"branch {gone_name} ({gone_id}) promoted to main"
         + (f"; old main kept as {kept.name}" if kept else "; old main dropped"))
    if kept is not None:
        emit(EventKind.CREATED, database_id=db.id, branch_id=kept.id, database=db.name,
             branch=kept.name, reason="the old main, kept by a promote")
    return Promoted(main, kept, seconds)


async def _restore_if_not_committed(host: Host, db: DatabaseRecord, branch: BranchRecord
                                    ) -> None:
    """Before the swap's commit the promoted branch is still itself: start it again."""
    try:
        props = await host.zfs.get_props(branch.dataset, [L.P_REPLACES])
    except DatasetNotFound:
        return
    if props[branch.dataset].user.get(L.P_REPLACES):
        return  # committed: the reconciler (or a retry) finishes it
    if branch.desired == Desired.RUNNING:
        await host.clusters.start(branch, db)
    await host.zfs.set_props(branch.dataset, {L.P_PHASE: L.PHASE_READY})
