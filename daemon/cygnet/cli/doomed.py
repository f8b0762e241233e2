"""What a destructive command would destroy, computed with read calls only.

Used by --dry-run and by the confirmation question; the daemon decides again
when the command runs, so these lists are a preview, not a promise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.cli.output import size
from cygnet.cli.shapes import lineage, state_name

if TYPE_CHECKING:
    from cygnet.api.v1 import backup_pb2 as bpb
    from cygnet.cli.client import Client


def _branch(b: pb.Branch) -> str:
    return (f"branch {b.database_name}/{b.name} ({b.id}, {state_name(b.state)}, "
            f"{size(b.used_bytes)} used)")


def _snapshots(client: Client, b: pb.Branch, after: int | None = None) -> list[str]:
    snaps = client.list_snapshots(pb.BranchRef(branch_id=b.id))
    return [f"snapshot {b.database_name}/{b.name}@{s.name} ({size(s.used_bytes)} used)"
            for s in snaps if after is None or s.created_at.ToNanoseconds() > after]


def database(client: Client, name: str) -> list[str]:
    d = client.get_database(name)
    items = [f"database {d.name} ({d.id}, pool {d.pool})"]
    for b in client.list_branches(d.id):
        items += [_branch(b), *_snapshots(client, b)]
    return items


def descendants(branches: list[pb.Branch], root_id: str) -> list[pb.Branch]:
    """The branches below `root_id`, parents before children."""
    by_parent = lineage(branches)
    found: list[pb.Branch] = []
    todo = list(by_parent.get(root_id, []))
    while todo:
        b = todo.pop(0)
        found.append(b)
        todo += by_parent.get(b.id, [])
    return found


def branch(client: Client, ref: pb.BranchRef, cascade: bool) -> list[str]:
    b = client.get_branch(ref)
    doomed = [b]
    if cascade:
        doomed += descendants(client.list_branches(b.database_id), b.id)
    items: list[str] = []
    # Children first, as they are deleted.
    for x in reversed(doomed):
        items += [_branch(x), *_snapshots(client, x)]
    return items


def reset(client: Client, ref: pb.BranchRef, snapshot: str) -> list[str]:
    b = client.get_branch(ref)
    label = f"{b.database_name}/{b.name}"
    if not snapshot:
        return [f"every change of branch {label} ({size(b.used_bytes)} used), reset to "
                f"{b.parent_branch_name or 'its parent'}'s current state",
                *_snapshots(client, b)]
    snaps = {s.name: s for s in client.list_snapshots(pb.BranchRef(branch_id=b.id))}
    target = snaps.get(snapshot)
    after = target.created_at.ToNanoseconds() if target else None
    return [f"every change of branch {label} since snapshot {snapshot}",
            *(_snapshots(client, b, after) if after is not None else [])]


def backups(items: list[bpb.Backup], keep_last: int | None, database: str,
            ids: list[str]) -> list[str]:
    """The backups a prune would delete: the named ones, and those beyond the newest
    `keep_last` of each branch of `database` (any if empty), as the daemon's retention does."""
    doomed = set(ids)
    if keep_last is not None:
        groups: dict[tuple[str, str], list[bpb.Backup]] = {}
        for b in items:
            if database and database not in (b.database_id, b.database_name):
                continue
            groups.setdefault((b.database_id, b.branch_id), []).append(b)
        for group in groups.values():
            group.sort(key=lambda b: (b.created_at.ToNanoseconds(), b.id))
            doomed.update(b.id for b in group[: max(0, len(group) - keep_last)])
    known = {b.id: b for b in items}
    return [f"backup {i} ({known[i].database_name}/{known[i].branch_name}, "
            f"{size(known[i].logical_bytes)})" if i in known else f"backup {i}"
            for i in sorted(doomed)]
