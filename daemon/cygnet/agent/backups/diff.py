"""Branch diff: which relations changed, and how many 8 KiB pages.

Both sides are read as consistent images through temporary clones and
compared page by page by their hashes (cygnet.blocks.pgdiff). Relation files
are named with SQL on the running branch(es): the new side first, then the
old one for relations only it has. Files no running branch can name
(dropped or rewritten relations) are reported by relfilenode.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from cygnet.agent import layout as L
from cygnet.agent.backups.progress import Reporter
from cygnet.agent.backups.relmap import RelName, relation_names
from cygnet.agent.backups.temp import TempImages
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.blocks.pgdiff import DataDirDiff, RelationChange, diff_data_dirs
from cygnet.errors import FailedPrecondition, InvalidArgument, NotFound


@dataclass(frozen=True)
class RelationRow:
    change: RelationChange
    name: RelName | None


@dataclass
class BranchDiff:
    old: str
    new: str
    relations: list[RelationRow] = field(default_factory=list)
    other_files: dict[str, int] = field(default_factory=dict)
    pages_compared: int = 0
    changed_pages: int = 0


async def diff_branches(host: Host, db_id: str, new_id: str, old_id: str, report: Reporter
                        ) -> BranchDiff:
    """`new_id` against `old_id` (a branch of the same database), or against its
    origin snapshot when `old_id` is empty."""
    report.phase("snapshot")
    # The lock is held until the temporary clones are gone (see create.py).
    async with host.db_locks[db_id], TempImages(host) as images:
        db = await _fresh(host, db_id)
        new = _ready(db, new_id)
        old = _ready(db, old_id) if old_id else None
        if old is None:
            if not new.origin:
                raise FailedPrecondition(
                    f"branch {new.name!r} has no origin snapshot (it was restored from a "
                    "backup); compare it with another branch")
            old_image = await images.of_snapshot(new.origin)
        else:
            if old.id == new.id:
                raise InvalidArgument("other", "compare a branch with another branch")
            old_image = await images.of_branch(old)
        new_image = await images.of_branch(new)
        report.phase("compare")
        diff = await asyncio.to_thread(diff_data_dirs, old_image.pgdata, new_image.pgdata)
    report.phase("map")
    old_label = f"{db.name}/{old.name}" if old else f"{db.name}/{new.name}@origin"
    return await _named(host, diff, new, old, old_label, f"{db.name}/{new.name}")


async def _fresh(host: Host, db_id: str) -> DatabaseRecord:
    inv = await host.inventory()
    if db_id not in inv.databases:
        raise NotFound(f"database {db_id!r} not found")
    return inv.databases[db_id]


def _ready(db: DatabaseRecord, branch_id: str) -> BranchRecord:
    branch = db.branch(branch_id)
    if branch.phase != L.PHASE_READY:
        raise FailedPrecondition(f"branch {branch.name!r} is {branch.phase}")
    return branch


async def _named(host: Host, diff: DataDirDiff, new: BranchRecord, old: BranchRecord | None,
                 old_label: str, new_label: str) -> BranchDiff:
    names = await relation_names(host, new, diff.relations)
    if old is not None:
        rest = [k for k in diff.relations if k not in names]
        names.update(await relation_names(host, old, rest))
    rows = [RelationRow(change, names.get(key)) for key, change in diff.relations.items()]
    rows.sort(key=lambda r: (-r.change.main_changed_pages, r.change.db_oid,
                             r.change.relfilenode))
    return BranchDiff(old_label, new_label, rows, dict(diff.other_files), diff.pages_compared,
                      diff.main_changed_pages)
