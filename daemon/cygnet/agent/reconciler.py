"""Brings the host back to its desired state when cygnetd starts.

Reads ZFS (the source of truth), then: removes temporary clones and
snapshots of interrupted backups and diffs, half-made templates, databases
and branches; finishes deletes and swaps (resets, promotes) a crash cut
short; drops branch points nobody uses; adopts live postmasters, starts what should run and stops
what should not.
"""

from __future__ import annotations

import contextlib
import logging
import shutil

from cygnet.agent import branches as br
from cygnet.agent import databases as dbs
from cygnet.agent import layout as L
from cygnet.agent import lease
from cygnet.agent.backups.temp import remove_leftovers
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, Inventory
from cygnet.agent.schema_instances import stop_leftover_servers
from cygnet.agent.supervisor import Supervisor
from cygnet.agent.swap import recover as recover_swaps
from cygnet.agent.templates import ensure_roots
from cygnet.states import Desired
from cygnet.zfs import HasDependents

log = logging.getLogger("cygnet.agent")


async def reconcile(host: Host, supervisor: Supervisor) -> None:
    await ensure_roots(host)
    await host.start_catalog()  # a read of everything, or the copy a clean stop saved
    # cygnetd owns its pools: after a reboot they may be imported but not mounted.
    await host.mount_unmounted()
    # Temporary clones of backups and diffs first: they pin their branches' snapshots.
    await stop_leftover_servers(host)  # a schema merge's throwaway servers hold theirs
    await remove_leftovers(host, host.datasets.datasets() if host.datasets else None)
    inv = await host.inventory()
    await _drop_half_made_templates(host, inv)
    for db in list(inv.databases.values()):
        if db.phase == L.PHASE_CREATING:
            log.warning("removing database %s: its creation was cut short", db.id)
            await dbs.finish_delete(host, db)
        elif db.phase == L.PHASE_DELETING:
            log.warning("finishing the deletion of database %s", db.id)
            await dbs.finish_delete(host, db)
        else:
            await _reconcile_branches(host, inv, db, supervisor)
    inv = await host.inventory()
    await _drop_orphan_branch_points(host, inv)
    _drop_orphan_socket_dirs(host, inv)
    await host.space.ensure_reserves()


async def _drop_half_made_templates(host: Host, inv: Inventory) -> None:
    for name in inv.templates:
        if f"{name}@{L.GOLDEN}" not in inv.datasets:
            log.warning("removing half-made template %s", name)
            await host.zfs.destroy(name, recursive=True)


async def _reconcile_branches(host: Host, inv: Inventory, db: DatabaseRecord,
                              supervisor: Supervisor) -> None:
    # Children before parents, so a parent's delete never waits on a child.
    for branch in sorted(db.branches.values(), key=lambda b: -b.created):
        if branch.phase in (L.PHASE_CREATING, L.PHASE_DELETING):
            log.warning("removing branch %s (%s was cut short)", branch.id, branch.phase)
            await br.destroy_branch(host, branch)
            del db.branches[branch.id]
    # Swaps (resets, promotes) committed before the crash roll forward.
    await recover_swaps(host, inv, db)
    for branch in db.branches.values():
        if branch.phase == L.PHASE_RESETTING:
            log.warning("branch %s: reset cut short before its new data; keeping its data",
                        branch.id)
            await host.zfs.set_props(branch.dataset, {L.P_PHASE: L.PHASE_READY})
            branch.phase = L.PHASE_READY
    for branch in db.branches.values():
        await _converge(host, db, branch, supervisor)


async def _converge(host: Host, db: DatabaseRecord, branch: BranchRecord,
                    supervisor: Supervisor) -> None:
    live = host.clusters.live(branch)
    if branch.desired == Desired.RUNNING and live is None:
        if not await supervisor.ensure_data(branch):
            return
        if db.main is not None and branch.id == db.main.id:
            lease.fence_before_start(host.config, host.clusters.pgdata(branch))
        try:
            await host.clusters.start(branch, db)
        except Exception as exc:
            log.error("branch %s did not start: %s", branch.id, exc)
            supervisor.record_failure(branch.id, f"Postgres did not start: {exc}".split("\n")[0])
    elif branch.desired != Desired.RUNNING and live is not None:
        await host.clusters.stop(branch, "fast")
    elif live is not None:
        log.info("adopted postmaster %d of %s/%s", live.pid, db.name, branch.name)
        # TLS and pg_hba.conf as this version writes them, without a restart.
        host.clusters.refresh(branch, db)
    if branch.desired == Desired.SUSPENDED and branch.port:
        # A suspend cut short after its stop: a suspended branch holds no port.
        await host.zfs.inherit(branch.dataset, L.P_PORT)
        branch.port = 0


async def _drop_orphan_branch_points(host: Host, inv: Inventory) -> None:
    for db in inv.databases.values():
        for branch in db.branches.values():
            for snap in branch.snapshots:
                if snap.kind == "branch-point" and not snap.clones:
                    with contextlib.suppress(HasDependents):
                        await host.zfs.destroy(snap.dataset)


def _drop_orphan_socket_dirs(host: Host, inv: Inventory) -> None:
    sockets = host.config.run_dir / "s"
    if not sockets.is_dir():
        return
    known = {b.id for b in inv.branches()}
    for entry in sockets.iterdir():
        if entry.name not in known:
            shutil.rmtree(entry, ignore_errors=True)
