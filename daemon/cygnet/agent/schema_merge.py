"""Three-way schema merge of one branch into another of the same database.

The merge base is where the two lineages split: walking up each branch's
origin snapshots (its ZFS origin, its parent's, ...) to the first branch
they share, the earlier of the two points on it. After a merge, the source's
state that was merged is kept as a snapshot (`cygnet:snapshot-kind=merge`)
and named in the target's `cygnet:merge-base.SOURCEID` property: the next
merge from that source starts from there, so nothing is applied twice and
nothing the target dropped since comes back.

Under the database's lock: snapshot the source (the new merge point), read
its schema, start throwaway servers on the merge base and on a clone of the
target, three-way merge, rehearse the DDL on the target's clone, then (not
in a dry run) check the target did not change meanwhile and apply it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from cygnet.agent import layout as L
from cygnet.agent.backups.temp import TEMP
from cygnet.agent.branches import take_snapshot
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.agent.migrations import carry_records
from cygnet.agent.schema_instances import Instance, Instances
from cygnet.agent.schema_service import Endpoint, SchemaService, apply_at
from cygnet.agent.service import BranchRef
from cygnet.errors import Aborted, FailedPrecondition, InvalidArgument
from cygnet.schema.apply import Applied
from cygnet.schema.hazards import Hazard, hazards
from cygnet.schema.merge import Conflict, Rename, three_way
from cygnet.schema.model import Catalog
from cygnet.schema.plan import Plan, plan
from cygnet.zfs import DatasetNotFound

MERGE_KIND = "merge"


def merge_prop(source_id: str) -> str:
    return f"cygnet:merge-base.{source_id}"


@dataclass
class MergeResult:
    # merged | dry-run | nothing-to-merge | conflicts | rehearsal-failed | partial | apply-failed
    outcome: str
    base: str
    plan: Plan = field(default_factory=Plan)
    hazards: list[Hazard] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    rehearsal: Applied | None = None
    applied: bool = False
    recovery: str = ""
    seconds: float = 0.0


def _chain(db: DatabaseRecord, branch: BranchRecord) -> list[tuple[BranchRecord, str]]:
    """(branch, point on it) up the lineage; "" is the branch's current state."""
    out, cur = [(branch, "")], branch
    while cur.parent_id and cur.origin:
        parent = db.branches.get(cur.parent_id)
        if parent is None or not cur.origin.startswith(parent.dataset + "@"):
            break
        out.append((parent, cur.origin))
        cur = parent
    return out


def split_point(db: DatabaseRecord, source: BranchRecord, target: BranchRecord
                ) -> tuple[BranchRecord, str]:
    """The snapshot where the lineages of `source` and `target` split, and its branch."""
    up_target = {b.id: point for b, point in _chain(db, target)}
    for branch, point in _chain(db, source):
        if branch.id not in up_target:
            continue
        other = up_target[branch.id]
        if not point or not other:
            return branch, point or other
        created = {s.dataset: s.created for s in branch.snapshots}
        return branch, min(point, other, key=lambda p: created.get(p, 0.0))
    raise FailedPrecondition(
        f"branches {source.name!r} and {target.name!r} have unrelated lineages (a branch "
        "restored from a backup starts a lineage of its own): there is no merge base")


class Merger:
    def __init__(self, schema: SchemaService) -> None:
        self.schema = schema
        self.agent = schema.agent
        self.host = schema.host

    async def merge(self, source_ref: BranchRef, target_ref: BranchRef, *, dry_run: bool,
                    renames: list[str], dbname: str, concurrently: bool) -> MergeResult:
        hints = [Rename.parse(r, f"renames[{i}]") for i, r in enumerate(renames)]
        db_id = await self.agent.database_id(source_ref)
        if await self.agent.database_id(target_ref) != db_id:
            raise FailedPrecondition("source and target are branches of different databases: "
                                     "unrelated lineages have no merge base")
        # Woken before the lock: starting a suspended branch takes it too.
        source_at = await self.schema.live(source_ref)
        target_at = await self.schema.live(target_ref)
        started = time.monotonic()
        async with self.host.db_locks[db_id], Instances(self.host) as servers:
            db, inv = await self.agent.read_database(db_id)
            _, source = self.agent.resolve(inv, source_ref)
            _, target = self.agent.resolve(inv, target_ref)
            if source.id == target.id:
                raise InvalidArgument("target", "merge a branch into another branch")
            run = _Run(self, db, source, target, servers, source_at, target_at, dbname, hints)
            result = await run.go(dry_run=dry_run, concurrently=concurrently)
        result.seconds = time.monotonic() - started
        return result


@dataclass
class _Run:
    m: Merger
    db: DatabaseRecord
    source: BranchRecord
    target: BranchRecord
    servers: Instances
    source_at: Endpoint
    target_at: Endpoint
    dbname: str
    renames: list[Rename]

    async def go(self, *, dry_run: bool, concurrently: bool) -> MergeResult:
        base_branch, base_snap, base_desc = await self._base()
        # A temporary snapshot until the merge is recorded: a crash leaves nothing
        # that the reconciler does not destroy.
        point = f"{self.source.dataset}@{L.new_id('mg')}"
        await take_snapshot(self.m.host, self.source, point.split("@", 1)[1], TEMP, TEMP, "")
        keep = False
        try:
            result, keep = await self._merge(base_branch, base_snap, base_desc, dry_run,
                                             concurrently)
            return result
        finally:
            await self.servers.close()  # their clones pin the snapshots below
            if keep:
                await self._record(point)
            else:
                await self._destroy(point)

    async def _merge(self, base_branch: BranchRecord, base_snap: str, base_desc: str,
                     dry_run: bool, concurrently: bool) -> tuple[MergeResult, bool]:
        source_cat = await self.m.schema.read(self.source_at, self.dbname)
        # Both servers start at once; both are waited for, so none is left half-made.
        made = await asyncio.gather(self.servers.of_snapshot(self.db, base_branch, base_snap),
                                    self.servers.of_branch(self.db, self.target),
                                    return_exceptions=True)
        servers = [m for m in made if isinstance(m, Instance)]
        if len(servers) != len(made):
            raise next(m for m in made if isinstance(m, BaseException))
        base, clone = servers
        base_cat, target_before, target_cat = await asyncio.gather(
            self.m.schema.read(self._at(base, "merge base"), self.dbname, self.renames),
            self.m.schema.read(self._at(clone, "target's clone"), self.dbname),
            self.m.schema.read(self._at(clone, "target's clone"), self.dbname, self.renames))
        desired, conflicts = three_way(base_cat, source_cat, target_cat)
        if conflicts:
            return MergeResult("conflicts", base_desc, conflicts=conflicts), False
        p = await asyncio.to_thread(plan, target_cat, desired, concurrently=concurrently)
        found = hazards(p, target_cat, desired)
        if not p.steps and not self.renames:
            return MergeResult("nothing-to-merge", base_desc, p, found), not dry_run
        rehearsal = await asyncio.to_thread(apply_at, self._at(clone, "target's clone"),
                                            self.dbname, p.statements, self.renames)
        result = MergeResult("dry-run", base_desc, p, found, rehearsal=rehearsal)
        if not rehearsal.ok:
            result.outcome, result.recovery = "rehearsal-failed", rehearsal.recovery()
            return result, False
        if dry_run:
            return result, False
        return await self._apply(result, target_before)

    async def _apply(self, result: MergeResult, target_before: Catalog
                     ) -> tuple[MergeResult, bool]:
        now = await self.m.schema.read(self.target_at, self.dbname)
        if now.objects != target_before.objects:
            raise Aborted(f"the schema of {self.target_at.label} changed during the merge; "
                          "nothing was applied: merge again")
        done = await asyncio.to_thread(apply_at, self.target_at, self.dbname,
                                       result.plan.statements, self.renames)
        result.applied = done.committed
        result.outcome = "merged" if done.ok else ("partial" if done.committed
                                                   else "apply-failed")
        result.recovery = done.recovery()
        if done.ok:  # migration records travel with the schema they made (docs/schema.md)
            await asyncio.to_thread(carry_records, self.source_at, self.target_at, self.dbname)
        # A partial merge is not recorded: merging again completes it.
        return result, done.ok

    def _at(self, inst: Instance, label: str) -> Endpoint:
        return Endpoint(inst.socket_dir, inst.port, label)

    async def _base(self) -> tuple[BranchRecord, str, str]:
        """The last merge's point on the source if it is still there, else the split point."""
        prop = merge_prop(self.source.id)
        props = await self.m.host.zfs.get_props(self.target.dataset, [prop])
        ds = props.get(self.target.dataset)
        recorded = ds.user.get(prop, "") if ds is not None else ""
        if recorded.startswith(self.source.dataset + "@") and any(
                s.dataset == recorded for s in self.source.snapshots):
            return self.source, recorded, f"the last merge from {self.source.name!r} ({recorded})"
        branch, snap = split_point(self.db, self.source, self.target)
        return branch, snap, f"where the lineages split: {snap} on branch {branch.name!r}"

    async def _record(self, point: str) -> None:
        prop = merge_prop(self.source.id)
        props = await self.m.host.zfs.get_props(self.target.dataset, [prop])
        ds = props.get(self.target.dataset)
        previous = ds.user.get(prop, "") if ds is not None else ""
        await self.m.host.zfs.set_props(point, {L.P_SNAP_KIND: MERGE_KIND})
        await self.m.host.zfs.set_props(self.target.dataset, {prop: point})
        if previous and previous != point and previous.startswith(self.source.dataset + "@"):
            await self._destroy(previous)

    async def _destroy(self, snapshot: str) -> None:
        with contextlib.suppress(DatasetNotFound):
            await self.m.host.zfs.destroy(snapshot)
