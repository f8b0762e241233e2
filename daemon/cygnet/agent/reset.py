"""ResetBranch: back to the parent's current state, or to one of the branch's snapshots.

The branch keeps its id, name, port and credentials, so its connection string
does not change. A reset to the parent makes a new clone under a new dataset
name (a new generation) that records which dataset it replaces; no rename is
needed, which zfs-fuse does badly on fresh mounts. The clone is made with the
branch's identity and `cygnet:replaces` in one call, which commits the swap
(agent/swap.py); the reconciler finishes one cut short, or keeps the old
data if the clone was not made.
"""

from __future__ import annotations

import logging
import secrets

from cygnet.agent import archive, archive_points, masked_goldens, swap
from cygnet.agent import layout as L
from cygnet.agent.branches import branch_point, find_snapshot
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, branch_props
from cygnet.errors import FailedPrecondition
from cygnet.states import Desired
from cygnet.zfs import HasDependents

log = logging.getLogger("cygnet.agent")


async def reset_branch(host: Host, db: DatabaseRecord, branch: BranchRecord, snapshot_ref: str
                       ) -> BranchRecord:
    """Must run under the database's lock, with `db` freshly loaded."""
    if branch.phase != L.PHASE_READY:
        raise FailedPrecondition(f"branch {branch.name!r} is {branch.phase}")
    if snapshot_ref:
        await _rollback(host, db, branch, snapshot_ref)
    elif await masked_goldens.is_masked_clone(host, branch):
        raise FailedPrecondition(
            f"branch {branch.name!r} is masked: a reset to its parent would bring back "
            "unmasked data; reset it to one of its own snapshots, or create a new masked branch")
    else:
        await _reclone(host, db, branch)
    return branch


async def _rollback(host: Host, db: DatabaseRecord, branch: BranchRecord, ref: str) -> None:
    snap = find_snapshot(branch, ref)
    newer = [s for s in branch.snapshots if s.created > snap.created and s.clones]
    if newer:
        raise FailedPrecondition(
            f"snapshots newer than {snap.name!r} have dependent branches; delete those first")
    await host.zfs.set_props(branch.dataset, {L.P_PHASE: L.PHASE_RESETTING})
    await host.clusters.stop(branch, "fast")
    try:
        await host.zfs.rollback(snap.dataset, destroy_newer=True)
    except HasDependents as exc:
        await _finish(host, db, branch)
        raise FailedPrecondition(str(exc)) from exc
    # Its next WAL is a new archive generation: it re-writes names it archived.
    archive.rewind(host.config, db, branch, archive_points.point_of(snap.dataset, snap),
                   (branch.id, archive.generation(branch)))
    await host.zfs.set_props(branch.dataset, {L.P_WAL_GEN: str(branch.wal_gen)})
    await _finish(host, db, branch)


async def _reclone(host: Host, db: DatabaseRecord, branch: BranchRecord) -> None:
    if branch.is_main:
        raise FailedPrecondition("main has no parent: name a snapshot to reset to")
    children = db.children(branch.id)
    if children:
        names = ", ".join(sorted(c.name for c in children))
        raise FailedPrecondition(
            f"branch {branch.name!r} has child branches ({names}); a reset would orphan them")
    parent = db.branches[branch.parent_id]
    await host.zfs.set_props(branch.dataset, {L.P_PHASE: L.PHASE_RESETTING})
    await host.clusters.stop(branch, "fast")
    try:
        origin, subscriptions = await branch_point(host, parent, f"reset {branch.name}")
        # A new archive generation that continues the parent's from the new branch point.
        archive.rewind(host.config, db, branch, archive_points.point_of(origin),
                       (parent.id, archive.generation(parent)))
        branch.fork = archive_points.fork_value(parent, origin)
        replacement = L.branch(db.pool, db.id, branch.id, secrets.token_hex(3))
        props = branch_props(branch) | {L.P_PHASE: L.PHASE_RESETTING,
                                        L.P_REPLACES: branch.dataset}
        await host.zfs.clone(origin, replacement, props)
    except BaseException:
        # Nothing replaced yet: the branch goes on with its old data.
        await _finish(host, db, branch)
        raise
    # The replacement is complete, and committed by its `replaces` (one `zfs clone`):
    # from here on the swap rolls forward (agent/swap.py).
    async def start(b: BranchRecord, d: DatabaseRecord) -> None:
        await host.clusters.start_clone(b, d, subscriptions)

    await swap.finish(host, db, branch, branch.dataset, replacement, start=start)


async def _finish(host: Host, db: DatabaseRecord, branch: BranchRecord) -> None:
    if branch.desired == Desired.RUNNING:
        await host.clusters.start(branch, db)
    await host.zfs.set_props(branch.dataset, {L.P_PHASE: L.PHASE_READY})
    branch.phase = L.PHASE_READY
