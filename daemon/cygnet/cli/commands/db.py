"""`cygnet db`: databases (a lineage of branches rooted at `main`)."""

from __future__ import annotations

import click

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.cli import complete, doomed, output, shapes, views
from cygnet.cli.commands import pitr
from cygnet.cli.commands.config import extensions, parse_settings
from cygnet.cli.commands.schedule import schedule
from cygnet.cli.confirm import confirm, destructive_options
from cygnet.cli.progress import working
from cygnet.cli.state import OrderedGroup, State, json_option, pass_state

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class ByteSize(click.ParamType):  # type: ignore[type-arg]
    """A size such as 512M, 10G or 1.5T (powers of 1024; a bare number is bytes)."""

    name = "SIZE"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("IB").removesuffix("B")
        unit = text[-1:] if text[-1:] in _UNITS else ""
        try:
            number = float(text[: len(text) - len(unit)])
        except ValueError:
            self.fail(f"{value!r} is not a size such as 512M, 10G or 1.5T", param, ctx)
        if number < 0:
            self.fail(f"{value!r} is negative", param, ctx)
        return int(number * _UNITS[unit])


@click.group(cls=OrderedGroup)
def db() -> None:
    """Create, list, inspect and delete databases.

    A database is a lineage of branches sharing one origin: creating it starts
    its `main` branch, and every other branch descends from main.
    """


@db.command("create", epilog="""\b
Examples:
  cygnet db create shop
  cygnet db create shop --version 15 --size medium
  cygnet db create shop --quota 20G
  cygnet db create shop --set work_mem=64MB --set max_connections=50
  cygnet db create shop --json | jq -r .connection.uri""")
@click.argument("name")
@click.option("--version", "version", metavar="MAJOR", default="",
              help="Postgres major version: 15, 16, 17 or 18, as installed on the host "
                   "(default: 15, or the host's default_postgres_version).")
@click.option("--size", metavar="CLASS", default="",
              help="Size class: nano, small, medium or large (default: small).")
@click.option("--pool", metavar="POOL", default="",
              help="ZFS pool (default: the one with the most free space).")
@click.option("--quota", type=ByteSize(), default=0,
              help="Most space the database (all its branches and snapshots) may use, "
                   "e.g. 20G, so that it cannot fill the pool (default: no limit).")
@click.option("--set", "settings", metavar="NAME=VALUE", multiple=True,
              help="A Postgres setting of the database, as `cygnet branch config set` "
                   "(repeatable); main starts with it.")
@json_option
@pass_state
def create(state: State, name: str, version: str, size: str, pool: str, quota: int,
           settings: tuple[str, ...]) -> None:
    """Create database NAME and start its main branch.

    Prints the database and the connection string of main.
    """
    req = pb.CreateDatabaseRequest(name=name, postgres_version=version, size_class=size,
                                   pool=pool, quota_bytes=quota,
                                   settings=parse_settings(settings, "--set"))
    with working(f"Creating database {name}", f"Created database {name}"):
        resp = state.client().create_database(req)
    views.show_new_database(resp, state.json)


@db.command("list", epilog="""\b
Examples:
  cygnet db list
  cygnet db list --json | jq -r '.[].name'""")
@json_option
@pass_state
def list_(state: State) -> None:
    """List the databases on the host, oldest first."""
    dbs = state.client().list_databases()
    if state.json:
        output.emit_json([shapes.database(d) for d in dbs])
    else:
        output.show(views.databases_table(dbs))


@db.command("show")
@click.argument("database", metavar="DB", shell_complete=complete.databases)
@json_option
@pass_state
def show(state: State, database: str) -> None:
    """Show database DB (name or id) and its branches."""
    client = state.client()
    d = client.get_database(database)
    branches = client.list_branches(d.id)
    if state.json:
        output.emit_json({**shapes.database(d), "branches": [shapes.branch(b) for b in branches]})
        return
    output.show(views.database_fields(d), "", views.branches_table(branches))


@db.command("rm", epilog="""\b
Examples:
  cygnet db rm shop --dry-run     # list what would be destroyed
  cygnet db rm shop               # asks first on a terminal
  cygnet db rm shop --yes         # in scripts (without a terminal it refuses otherwise)""")
@click.argument("database", metavar="DB", shell_complete=complete.databases)
@click.option("--override-protection", "override_protection", is_flag=True,
              help="Even if some of its branches are protected (admin role only).")
@destructive_options
@json_option
@pass_state
def rm(state: State, database: str, yes: bool, dry_run: bool,
       override_protection: bool) -> None:
    """Delete database DB (name or id) with every branch and snapshot.

    Stops each branch's Postgres and destroys its datasets. There is no undo.
    """
    if not confirm(f"delete database {database}", lambda: doomed.database(state.client(), database),
                   yes=yes, dry_run=dry_run, json_output=state.json):
        return
    with working(f"Deleting database {database}", f"Deleted database {database}"):
        resp = state.client().delete_database(database, override_protection)
    if state.json:
        output.emit_json({"database_id": resp.database_id,
                          "deleted_branch_ids": list(resp.deleted_branch_ids)})
        return
    n = len(resp.deleted_branch_ids)
    output.show(f"Deleted database {database} ({resp.database_id}) and "
                f"{n} branch{'es' if n != 1 else ''}.")


db.add_command(extensions)
db.add_command(schedule)


@db.command("move", epilog="""\b
Example:
  cygnet --coordinator coord:7434 db move shop --to db-18""")
@click.argument("database", metavar="DB", shell_complete=complete.databases)
@click.option("--to", "to_host", metavar="HOST", required=True,
              help="The host to move it to (not drained, with its PostgreSQL major).")
@json_option
@pass_state
@click.pass_context
def move(ctx: click.Context, state: State, database: str, to_host: str) -> None:
    """Move DB and all its branches to another host (needs --coordinator; docs/ha.md)."""
    from cygnet.cli import moves
    from cygnet.cli.fleet import coordinator

    done = moves.move(coordinator(ctx, state), database, to_host, show=not state.json)
    if state.json:
        output.emit_json(done)
        return
    output.show(f"Moved database {database} to {done['to_host']} "
                f"({output.size(done['moved_bytes'])} sent, {done['downtime_seconds']}s down).")


# A deleted database, back from the repository (cli/commands/pitr.py).
db.add_command(pitr.restore_database)
