"""Human renderings (rich) of API messages; the JSON twins live in shapes.py."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.cli import output as o
from cygnet.cli import shapes
from cygnet.cli.shapes import lineage, state_name
from cygnet.durations import format_duration

if TYPE_CHECKING:  # rich is loaded only where it draws (see output.py)
    from google.protobuf.timestamp_pb2 import Timestamp
    from rich.console import RenderableType
    from rich.text import Text
    from rich.tree import Tree


def databases_table(dbs: list[pb.Database]) -> Any:
    rows = [(d.name, d.postgres_version, d.size_class, d.pool, str(d.branch_count),
             o.age(d.created_at), d.id) for d in dbs]
    return o.table(("NAME", "POSTGRES", "SIZE", "POOL", "BRANCHES", "CREATED", "ID"), rows)


def database_fields(d: pb.Database) -> Any:
    return o.fields([
        ("Database", d.name), ("Id", d.id), ("Postgres", d.postgres_version),
        ("Size class", d.size_class), ("Pool", d.pool), ("Branches", str(d.branch_count)),
        ("Created", o.timestamp(d.created_at)),
    ])


def branches_table(branches: list[pb.Branch]) -> Any:
    rows = [(b.database_name, b.name, b.parent_branch_name or "-", o.state(state_name(b.state)),
             str(b.port or "-"), o.size(b.used_bytes), o.age(b.created_at), expiry(b),
             protection(b), b.id)
            for b in branches]
    return o.table(("DATABASE", "BRANCH", "PARENT", "STATE", "PORT", "USED", "CREATED",
                    "EXPIRES", "PROTECTED", "ID"), rows)


def _until(ts: Timestamp) -> str:
    return f"in {format_duration(ts.ToSeconds() - time.time())}"


def expiry(b: pb.Branch) -> str:
    """When the branch goes: `in 6d23h`; `-` for never; `held` when its children or
    its protection keep it past its own expiry, for good."""
    if not b.HasField("effective_expires_at"):
        return "held" if b.HasField("expires_at") else "-"
    return _until(b.effective_expires_at)


def protection(b: pb.Branch) -> str:
    if not b.protected:
        return "-"
    return _until(b.protected_until) if b.HasField("protected_until") else "yes"


def _desired(b: pb.Branch) -> str:
    if b.desired_running:
        return "running"
    # Suspended is not stopped: a connect wakes it.
    return "running on a connect" if b.state == pb.BRANCH_STATE_SUSPENDED else "stopped"


def branch_fields(b: pb.Branch) -> Any:
    parent = f"{b.parent_branch_name} ({b.parent_branch_id})" if b.parent_branch_id else "-"
    return o.fields([
        ("Branch", f"{b.database_name}/{b.name}"), ("Id", b.id),
        ("State", o.state(state_name(b.state))),
        *([("Why", b.state_message)] if b.state_message else []),
        ("Desired", _desired(b)),
        ("Parent", parent), ("Origin snapshot", b.origin_snapshot or "-"),
        ("Port", str(b.port or "-")), ("Used", o.size(b.used_bytes)),
        ("Logical", o.size(b.logical_bytes)), ("Postgres", b.postgres_version),
        ("Size class", b.size_class), ("Children", str(len(b.child_branch_ids))),
        ("Suspend after", _idle(b.suspend_after.seconds)),
        ("Expires", expiry(b) if b.HasField("expires_at") else "never"),
        ("Protected", {"-": "no", "yes": "yes, until removed"}.get(protection(b), protection(b))),
        ("Created", o.timestamp(b.created_at)),
    ])


def _idle(seconds: int) -> str:
    """A branch's idle timeout: `never`, `5m`, `1m30s`."""
    from cygnet.durations import format_duration

    return format_duration(seconds) if seconds else "never"


def snapshots_table(snaps: list[pb.Snapshot]) -> Any:
    rows = [(s.name, o.size(s.used_bytes), ", ".join(s.dependent_branch_ids) or "-",
             o.age(s.created_at), s.id) for s in snaps]
    return o.table(("NAME", "USED", "DEPENDENT BRANCHES", "CREATED", "ID"), rows)


def connection_fields(c: pb.Connection) -> RenderableType:
    from rich.console import Group
    from rich.text import Text

    # Never wrapped: a URI folded at the terminal's edge cannot be copied.
    lines = [Text.assemble(("Connect   ", "bold"), "  ", c.uri, no_wrap=True, overflow="ignore")]
    if c.socket_dir:
        lines.append(Text.assemble(("Socket dir", "bold"), "  ", c.socket_dir, no_wrap=True,
                                   overflow="ignore"))
    return Group(*lines)


def _branch_label(b: pb.Branch) -> Text:
    from rich.text import Text

    label = Text.assemble((b.name, "bold"), "  ", o.state(state_name(b.state)),
                          f"  {o.size(b.used_bytes)}  {o.age(b.created_at)}")
    if b.port:
        label.append(f"  :{b.port}", style="dim")
    return label


def branch_tree(db: pb.Database, branches: list[pb.Branch]) -> Tree:
    """The lineage of one database: main at the root, children below their parents."""
    from rich.text import Text
    from rich.tree import Tree

    root = Tree(Text.assemble((db.name, "bold cyan"),
                              (f"  postgres {db.postgres_version}, {db.size_class}, "
                               f"pool {db.pool}", "dim")))
    by_parent = lineage(branches)

    def grow(node: Tree, b: pb.Branch) -> None:
        child = node.add(_branch_label(b))
        for c in by_parent.get(b.id, []):
            grow(child, c)

    for b in by_parent.get("", []):
        grow(root, b)
    return root


def host_view(h: pb.HostStatus) -> list[Any]:
    info = o.fields([
        ("Host", f"{h.hostname} ({h.host_id})" if h.host_id != h.hostname else h.hostname),
        ("cygnetd", h.version), ("ZFS", h.zfs_dialect),
        ("Postgres", ", ".join(h.postgres_versions) or "-"),
        ("Databases", str(h.database_count)), ("Branches", str(h.branch_count)),
        ("Running", str(h.running_clusters)),
    ])
    rows = [(p.name, p.health, o.size(p.size_bytes), o.size(p.used_bytes), o.size(p.free_bytes))
            for p in h.pools]
    pools = o.table(("POOL", "HEALTH", "SIZE", "USED", "FREE"), rows)
    return [info, "", pools]


def show_new_database(resp: pb.CreateDatabaseResponse, as_json: bool) -> None:
    """What `db create` and `db restore` print: the database, its main and how to connect."""
    if as_json:
        o.emit_json({"database": shapes.database(resp.database),
                     "main_branch": shapes.branch(resp.main_branch),
                     "connection": shapes.connection(resp.connection)})
        return
    o.show(database_fields(resp.database), "", connection_fields(resp.connection))
