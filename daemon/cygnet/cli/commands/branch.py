"""`cygnet branch`: copy-on-write branches of a database (zfs snapshot + clone)."""

from __future__ import annotations

import click

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.cli import complete, doomed, output, shapes, views
from cygnet.cli.commands import pitr
from cygnet.cli.commands.config import config
from cygnet.cli.commands.lifetime import idle_seconds, seconds, update
from cygnet.cli.confirm import confirm, destructive_options
from cygnet.cli.progress import working
from cygnet.cli.refs import branch_ref, describe, split_new
from cygnet.cli.state import OrderedGroup, State, db_option, json_option, pass_state

REF_HELP = "BRANCH is DB/BRANCH, BRANCH with --db DB, a branch id, or DB for its main branch."


@click.group(cls=OrderedGroup)
def branch() -> None:
    """Create, inspect, reset, start, stop and delete branches.

    A branch is a running Postgres cluster on a ZFS clone of its parent: it is
    created in about a second whatever the size of the data, and costs only
    the blocks that change afterwards.

    BRANCH is written DB/BRANCH, or BRANCH with --db DB; a bare DB means its
    main branch; branch ids (br...) are accepted everywhere.
    """


@branch.command("create", epilog="""\b
Examples:
  cygnet branch create shop/feature            # from main's current state
  cygnet branch create shop/hotfix --from feature
  cygnet branch create shop/replay --snapshot before-migration
  cygnet branch create shop/pg18 --upgrade-to 18   # rehearse a major upgrade
  cygnet branch create shop/before --at '2026-11-25 14:03:00+00'   # main back then
  cygnet branch create shop/x --at-lsn 0/3000060 --from feature
  cygnet branch create feature --db shop --json""")
@click.argument("name", metavar="DB/NAME", shell_complete=complete.databases)
@click.option("--from", "parent", metavar="PARENT", default="",
              help="Parent branch (name or id; default: main).")
@click.option("--snapshot", metavar="SNAP", default="",
              help="Branch from this existing snapshot of the parent instead of its "
                   "current state.")
@click.option("--upgrade-to", "upgrade_to", metavar="MAJOR", default="",
              help="Upgrade the branch's copy to this newer Postgres major with pg_upgrade "
                   "(an upgrade rehearsal; the parent is untouched).")
@click.option("--ttl", metavar="DURATION", default=None,
              help="Delete the branch this long after its creation: 30m, 12h, 7d, 1d12h.")
@click.option("--suspend-after", "suspend_after", metavar="IDLE", default=None,
              help="Suspend the branch after this long without a client connection "
                   "(e.g. 90s, 5m, 2h; 0 or never: never; default: the host's).")
@click.option("--at", "at", metavar="TIME", default=None,
              help="The parent's state at this time (point-in-time recovery). " + pitr.AT_HELP)
@click.option("--at-lsn", "at_lsn", metavar="LSN", default=None,
              help="The parent's state at this WAL position. " + pitr.AT_LSN_HELP)
@click.option("--masked", is_flag=True,
              help="A clone of the parent's masked snapshot (the database's masking rules "
                   "applied; built once, then reused), with its own password.")
@db_option
@json_option
@pass_state
def create(state: State, name: str, parent: str, snapshot: str, db: str | None,
           ttl: str | None, upgrade_to: str, suspend_after: str | None, at: str | None = None,
           at_lsn: str | None = None, masked: bool = False) -> None:
    """Create branch NAME of database DB and start it.

    Takes a fresh snapshot of the parent (or uses --snapshot), clones it and
    starts Postgres on the clone. Prints the branch and its connection string.
    """
    database, branch_name = split_new(name, db)
    if masked:  # docs/schema.md "Masked branches"
        from cygnet.cli.commands.migrate import create_masked
        return create_masked(state, database, branch_name, parent)
    req = pb.CreateBranchRequest(database=database, name=branch_name, parent=parent,
                                 parent_snapshot=snapshot, upgrade_to=upgrade_to)
    if suspend_after is not None:
        req.suspend_after.seconds = idle_seconds(suspend_after)
    if ttl is not None:
        req.ttl.FromSeconds(seconds(ttl, "--ttl"))
    pitr.set_point(req, at, at_lsn)  # --at / --at-lsn (docs/durability.md)
    label = f"{database}/{branch_name}"
    with working(f"Creating branch {label}", f"Created branch {label}"):
        resp = state.client().create_branch(req)
    upgrade = _upgrade_shape(resp.upgrade) if resp.HasField("upgrade") else None
    if state.json:
        output.emit_json({"branch": shapes.branch(resp.branch),
                          "connection": shapes.connection(resp.connection),
                          **({"upgrade": upgrade} if upgrade else {})})
        return
    output.show(views.branch_fields(resp.branch), "",
                views.connection_fields(resp.connection))
    if upgrade:
        u = resp.upgrade
        output.show("", (
            f"Upgraded from PostgreSQL {u.from_version} to {u.to_version} in {u.seconds:.1f}s; "
            f"{len(u.checks)} pg_upgrade checks passed."))
        if u.missing_extensions:
            output.show(f"Not available on {u.to_version} (none is in use): "
                        + ", ".join(u.missing_extensions))


def _upgrade_shape(u: pb.UpgradeReport) -> dict[str, object]:
    return {"from_version": u.from_version, "to_version": u.to_version, "seconds": u.seconds,
            "checks": list(u.checks), "missing_extensions": list(u.missing_extensions),
            "old_system_identifier": u.old_system_identifier,
            "new_system_identifier": u.new_system_identifier}


@branch.command("list", epilog="""\b
Examples:
  cygnet branch list
  cygnet branch list shop --json | jq -r '.[] | "\\(.name) \\(.state)"'""")
@click.argument("database", metavar="[DB]", required=False, default="",
                shell_complete=complete.databases)
@json_option
@pass_state
def list_(state: State, database: str) -> None:
    """List the branches of DB, or of every database, oldest first."""
    branches = state.client().list_branches(database)
    if state.json:
        output.emit_json([shapes.branch(b) for b in branches])
    else:
        output.show(views.branches_table(branches))


@branch.command("tree", epilog="""\b
Example:
  cygnet branch tree shop""")
@click.argument("database", metavar="[DB]", required=False, default="",
                shell_complete=complete.databases)
@json_option
@pass_state
def tree(state: State, database: str) -> None:
    """Draw the lineage of DB (or of every database) as a tree.

    Each branch shows its state, used size, age and port.
    """
    client = state.client()
    dbs = [client.get_database(database)] if database else client.list_databases()
    branches = client.list_branches(database)
    if state.json:
        output.emit_json([{"database": shapes.database(d),
                           "branches": shapes.tree([b for b in branches
                                                    if b.database_id == d.id])}
                          for d in dbs])
        return
    output.show(*[views.branch_tree(d, [b for b in branches if b.database_id == d.id])
                  for d in dbs])


@branch.command("show", epilog=REF_HELP)
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@db_option
@json_option
@pass_state
def show(state: State, ref: str, db: str | None) -> None:
    """Show one branch: state, lineage, port, sizes."""
    _show_branch(state, state.client().get_branch(branch_ref(ref, db)))


def _show_branch(state: State, b: pb.Branch) -> None:
    if state.json:
        output.emit_json(shapes.branch(b))
    else:
        output.show(views.branch_fields(b))


@branch.command("reset", epilog=f"""{REF_HELP}

\b
Examples:
  cygnet branch reset shop/feature                    # to main's current state (asks first)
  cygnet branch reset shop/feature --to before-test   # to its own snapshot
  cygnet branch reset shop/feature --dry-run          # what would be thrown away
  cygnet branch reset shop/feature --yes              # in scripts""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@click.option("--to", "snapshot", metavar="SNAP", default="",
              help="One of the branch's own snapshots (default: the parent's current state).")
@click.option("--override-protection", "override_protection", is_flag=True,
              help="Even if the branch is protected (admin role only).")
@db_option
@destructive_options
@json_option
@pass_state
def reset(state: State, ref: str, snapshot: str, db: str | None, yes: bool,
          dry_run: bool, override_protection: bool) -> None:
    """Throw away a branch's changes.

    Resets BRANCH to its parent's current state, or to one of its own
    snapshots with --to. Name, port and credentials stay the same; open
    connections are dropped.
    """
    target = branch_ref(ref, db)
    name = describe(target)
    if not confirm(f"reset branch {name}", lambda: doomed.reset(state.client(), target, snapshot),
                   yes=yes, dry_run=dry_run, json_output=state.json):
        return
    with working(f"Resetting branch {name}", f"Reset branch {name}"):
        b = state.client().reset_branch(target, snapshot, override_protection)
    _show_branch(state, b)


@branch.command("promote", epilog="""BRANCH is DB/BRANCH, BRANCH with --db DB, or a branch id.

\b
Examples:
  cygnet branch promote shop/pg18-live             # old main kept as main_before_<time>
  cygnet branch promote shop/pg18-live --drop-old  # old main destroyed (asks first)
  cygnet branch promote shop/fix --json""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@click.option("--drop-old", "drop_old", is_flag=True,
              help="Destroy the old main's data instead of keeping it as a stopped branch "
                   "(asks first, unless --yes).")
@db_option
@destructive_options
@json_option
@pass_state
def promote(state: State, ref: str, drop_old: bool, db: str | None, yes: bool,
            dry_run: bool) -> None:
    """Make BRANCH its database's main.

    Main keeps its name, port and password, so its connection strings do not
    change; it now serves BRANCH's data (a promoted upgrade branch gives the
    database its major). Main is down for about a second; BRANCH's own name
    and port are gone afterwards. The old main's data stays as a stopped
    branch main_before_<time>, or is destroyed with --drop-old.
    """
    target = branch_ref(ref, db, bare_is_main=False)
    name = describe(target)
    if drop_old and not confirm(
            f"promote {name} and drop the old main",
            lambda: doomed.branch(state.client(), pb.BranchRef(
                database=state.client().get_branch(target).database_id), False),
            yes=yes, dry_run=dry_run, json_output=state.json):
        return
    with working(f"Promoting branch {name}", f"Promoted {name} to main"):
        res = state.client().promote_branch(target, drop_old)
    if state.json:
        output.emit_json({"main": shapes.branch(res.main),
                          "old_main": shapes.branch(res.old_main)
                          if res.HasField("old_main") else None,
                          "downtime_seconds": round(res.downtime.ToTimedelta()
                                                    .total_seconds(), 3)})
        return
    output.show(views.branch_fields(res.main))
    down = res.downtime.ToTimedelta().total_seconds()
    kept = f"old main kept as {res.old_main.name}" if res.HasField("old_main") else \
        "old main dropped"
    output.show(f"main was down {down:.2f}s; {kept}")


@branch.command("start", epilog=REF_HELP)
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@db_option
@json_option
@pass_state
def start(state: State, ref: str, db: str | None) -> None:
    """Start a stopped branch's Postgres (and keep it running)."""
    target = branch_ref(ref, db)
    with working(f"Starting branch {describe(target)}", f"Started {describe(target)}"):
        b = state.client().start_branch(target)
    _show_branch(state, b)


@branch.command("stop", epilog=REF_HELP)
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@db_option
@json_option
@pass_state
def stop(state: State, ref: str, db: str | None) -> None:
    """Stop a branch's Postgres; its data stays.

    It stays stopped (also across daemon restarts) until `branch start`.
    """
    target = branch_ref(ref, db)
    with working(f"Stopping branch {describe(target)}", f"Stopped {describe(target)}"):
        b = state.client().stop_branch(target)
    _show_branch(state, b)


@branch.command("suspend", epilog=REF_HELP)
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@db_option
@json_option
@pass_state
def suspend(state: State, ref: str, db: str | None) -> None:
    """Scale a branch to zero: stop its Postgres and free its port; its data stays.

    Connected clients are cut off. A client connecting through the host's
    endpoint wakes it, as does `branch resume`. Idle branches are suspended
    by themselves (see --suspend-after of `branch create`). Refused while WAL
    waits to be archived or replicas are attached.
    """
    target = branch_ref(ref, db)
    with working(f"Suspending branch {describe(target)}", f"Suspended {describe(target)}"):
        b = state.client().suspend_branch(target)
    _show_branch(state, b)


@branch.command("resume", epilog=REF_HELP)
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@db_option
@json_option
@pass_state
def resume(state: State, ref: str, db: str | None) -> None:
    """Start a suspended branch; it may get another port than before."""
    target = branch_ref(ref, db)
    with working(f"Resuming branch {describe(target)}", f"Resumed {describe(target)}"):
        b = state.client().resume_branch(target)
    _show_branch(state, b)


@branch.command("rm", epilog="""BRANCH is DB/BRANCH, BRANCH with --db DB, or a branch id.

\b
Examples:
  cygnet branch rm shop/feature
  cygnet branch rm shop/feature --cascade --dry-run   # what would go
  cygnet branch rm shop/feature --cascade             # with every descendant (asks first)""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@click.option("--cascade", is_flag=True,
              help="Also delete every descendant branch (asks first, unless --yes).")
@click.option("--override-protection", "override_protection", is_flag=True,
              help="Even if the branch is protected (admin role only).")
@db_option
@destructive_options
@json_option
@pass_state
def rm(state: State, ref: str, cascade: bool, db: str | None, yes: bool,
       dry_run: bool, override_protection: bool) -> None:
    """Delete a branch: stop its Postgres and destroy its clone.

    Refused while the branch has child branches, unless --cascade. To delete
    main, delete the database (`cygnet db rm`).
    """
    target = branch_ref(ref, db, bare_is_main=False)
    name = describe(target)
    # Only a cascade asks: deleting one leaf branch is the everyday case.
    action = f"delete branch {name} and its descendants" if cascade else f"delete branch {name}"
    if not confirm(action, lambda: doomed.branch(state.client(), target, cascade),
                   yes=yes or not cascade, dry_run=dry_run, json_output=state.json):
        return
    with working(f"Deleting branch {name}", f"Deleted branch {name}"):
        deleted = state.client().delete_branch(target, cascade, override_protection)
    if state.json:
        output.emit_json({"deleted_branch_ids": deleted})
    else:
        output.show(f"Deleted {len(deleted)} branch{'es' if len(deleted) != 1 else ''}: "
                    + ", ".join(deleted))


@branch.command("diff", epilog="""\b
Examples:
  cygnet branch diff shop/feature          # what feature changed since it was made
  cygnet branch diff shop/main feature     # from main to feature (same database)
  cygnet branch diff shop/feature --json""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@click.argument("other", metavar="[OTHER]", required=False, default="",
                shell_complete=complete.branches)
@db_option
@json_option
@pass_state
def diff(state: State, ref: str, other: str, db: str | None) -> None:
    """Which tables and indexes changed, and how many 8 KiB pages.

    With one branch: against its origin snapshot. With two: from BRANCH to
    OTHER (a bare OTHER is a branch of BRANCH's database). Both are read as
    fresh snapshots; pages are compared by their hashes.
    """
    from cygnet.api.v1 import backup_pb2 as bpb
    from cygnet.cli.commands import _backups as api

    first = branch_ref(ref, db)
    req = bpb.DiffBranchesRequest(branch=first)
    label = describe(first)
    if other:
        second = (branch_ref(other) if "/" in other or not first.database
                  else branch_ref(other, first.database))
        # From BRANCH to OTHER: OTHER is the side whose changes are shown.
        req = bpb.DiffBranchesRequest(branch=second, other=first)
        label = f"{describe(first)} and {describe(second)}"
    result = api.stream(state, "DiffBranches", req, f"Comparing {label}")
    if state.json:
        output.emit_json(api.branch_diff(result))
    else:
        output.show(api.diff_table(result))


branch.add_command(config)
branch.add_command(update)


# Point in time (cli/commands/pitr.py).
branch.add_command(pitr.history)
branch.add_command(pitr.restore)
