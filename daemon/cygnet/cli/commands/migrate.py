"""`cygnet migrate` and `cygnet mask`: migrations per branch, masking rules per database.

The client reads the migration files (golang-migrate's layout) and sends them;
the daemon applies them inside the branch and records each one there.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import click

from cygnet.api.v1 import schema_pb2 as spb
from cygnet.cli import complete, output, shapes, views
from cygnet.cli.commands.schema import _call
from cygnet.cli.errors import CliError, Exit
from cygnet.cli.progress import working
from cygnet.cli.refs import branch_ref
from cygnet.cli.state import OrderedGroup, State, json_option, pass_state
from cygnet.errors import InvalidArgument
from cygnet.migrate.files import read_dir

DBNAME = click.option("--dbname", default="", metavar="NAME",
                      help="The SQL database inside the branch (default: postgres).")


def _files(directory: str | None) -> list[spb.MigrationFile]:
    if directory is None:
        return []
    try:
        found = read_dir(Path(directory))
    except InvalidArgument as exc:
        raise CliError(f"{directory}: {exc.reason}", Exit.INVALID) from exc
    except OSError as exc:
        raise CliError(f"{directory}: {exc.strerror}", Exit.INVALID) from exc
    return [spb.MigrationFile(version=m.version, name=m.name, up=m.up, down=m.down,
                              file=m.file) for m in found]


def _when(seconds: float) -> str:
    if not seconds:
        return ""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _run_json(r: spb.MigrationRun) -> dict[str, Any]:
    return {"version": r.version, "name": r.name, "direction": r.direction,
            "duration_seconds": r.duration_seconds,
            "locks": [{"locktype": lk.locktype, "relation": lk.relation, "mode": lk.mode}
                      for lk in r.locks]}


def _json(resp: spb.MigrationsResponse) -> dict[str, Any]:
    return {"branch": resp.branch,
            "migrations": [{"version": m.version, "name": m.name, "state": m.state,
                            "checksum": m.checksum, "applied_at": _when(m.applied_at) or None,
                            "duration_seconds": m.duration_seconds, "origin": m.origin}
                           for m in resp.migrations],
            "rehearsal": [_run_json(r) for r in resp.rehearsal],
            "rehearsal_seconds": resp.rehearsal_seconds,
            "ran": [_run_json(r) for r in resp.ran]}


def _show_runs(title: str, runs: Any) -> None:
    click.echo(title)
    for r in runs:
        locks = ", ".join(f"{lk.mode} on {lk.relation or lk.locktype}" for lk in r.locks)
        click.echo(f"  {r.version} {r.name} ({r.direction}): {r.duration_seconds:.3f} s"
                   f"{'; locks: ' + locks if locks else ''}")


def _show(resp: spb.MigrationsResponse) -> None:
    if resp.rehearsal or resp.rehearsal_seconds:
        _show_runs(f"Rehearsal on a throwaway clone of {resp.branch} "
                   f"({resp.rehearsal_seconds:.2f} s):", resp.rehearsal)
    if resp.ran:
        _show_runs(f"Ran on {resp.branch}:", resp.ran)
    rows = [(m.version, m.name, m.state, _when(m.applied_at),
             f"{m.duration_seconds:.3f}" if m.applied_at else "", m.origin)
            for m in resp.migrations]
    output.show(output.table(["VERSION", "NAME", "STATE", "APPLIED AT", "SECONDS", "ORIGIN"],
                             rows))


def _finish(state: State, resp: spb.MigrationsResponse) -> None:
    if state.json:
        output.emit_json(_json(resp))
    else:
        _show(resp)


@click.group(cls=OrderedGroup)
def migrate() -> None:
    """Apply, list and roll back SQL migrations on a branch.

    DIR holds golang-migrate's layout: NNN_name.up.sql and NNN_name.down.sql.
    Each applied migration is recorded inside the branch, in
    cygnet_migrate.schema_migrations (version, name, checksum, applied_at,
    duration). See docs/schema.md.
    """


@migrate.command("apply", epilog="""\b
Examples:
  cygnet migrate apply shop/feature ./migrations
  cygnet migrate apply shop/main ./migrations --rehearse""")
@click.argument("branch", metavar="DB/BRANCH", shell_complete=complete.branches)
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--rehearse", is_flag=True,
              help="Apply to a throwaway clone first and report time and locks; apply to "
                   "the branch only if that passes.")
@DBNAME
@json_option
@pass_state
def apply(state: State, branch: str, directory: str, rehearse: bool, dbname: str) -> None:
    """Apply DIR's pending migrations to BRANCH, in version order."""
    req = spb.ApplyMigrationsRequest(branch=branch_ref(branch), migrations=_files(directory),
                                     rehearse=rehearse, dbname=dbname,
                                     request_id=str(uuid.uuid4()))
    _finish(state, _call(state, "ApplyMigrations", req, None))


@migrate.command("status", epilog="""\b
Examples:
  cygnet migrate status shop/feature
  cygnet migrate status shop/feature --dir ./migrations   # pending and changed files too""")
@click.argument("branch", metavar="DB/BRANCH", shell_complete=complete.branches)
@click.option("--dir", "directory", default=None, metavar="DIR",
              type=click.Path(file_okay=False), help="Compare with this directory's files.")
@DBNAME
@json_option
@pass_state
def status(state: State, branch: str, directory: str | None, dbname: str) -> None:
    """The migrations recorded in BRANCH (and DIR's pending ones)."""
    req = spb.MigrationStatusRequest(branch=branch_ref(branch), migrations=_files(directory),
                                     dbname=dbname)
    _finish(state, _call(state, "MigrationStatus", req, 60.0))


@migrate.command("rollback", epilog="""\b
Examples:
  cygnet migrate rollback shop/feature --to 2 --dir ./migrations
  cygnet migrate rollback shop/feature --to 0 --dir ./migrations   # all of them""")
@click.argument("branch", metavar="DB/BRANCH", shell_complete=complete.branches)
@click.option("--to", "to_version", required=True, type=click.IntRange(0),
              help="The version to go back to (0: before the first).")
@click.option("--dir", "directory", default=".", show_default=True, metavar="DIR",
              type=click.Path(file_okay=False), help="Where the down files are.")
@DBNAME
@json_option
@pass_state
def rollback(state: State, branch: str, to_version: int, directory: str, dbname: str) -> None:
    """Run the down files of the migrations above --to, newest first."""
    req = spb.RollbackMigrationsRequest(branch=branch_ref(branch),
                                        migrations=_files(directory), to_version=to_version,
                                        dbname=dbname, request_id=str(uuid.uuid4()))
    _finish(state, _call(state, "RollbackMigrations", req, None))


@click.group(cls=OrderedGroup)
def mask() -> None:
    """Masking rules of a database, for masked branches (branch create --masked).

    The rules file is TOML; see docs/schema.md "Masked branches".
    """


@mask.command("set", epilog="""\b
Examples:
  cygnet mask set shop masking.toml""")
@click.argument("database", metavar="DB", shell_complete=complete.databases)
@click.argument("file", metavar="FILE", type=click.File("r", encoding="utf-8"))
@json_option
@pass_state
def mask_set(state: State, database: str, file: Any) -> None:
    """Check FILE's rules against DB's main branch and store them."""
    req = spb.SetMaskingRulesRequest(database=database, rules=file.read())
    resp = _call(state, "SetMaskingRules", req, 60.0)
    if state.json:
        output.emit_json({"database": resp.database, "digest": resp.digest})
    else:
        click.echo(f"Masking rules of {resp.database} set (digest {resp.digest[:12]}).")


@mask.command("show")
@click.argument("database", metavar="DB", shell_complete=complete.databases)
@json_option
@pass_state
def mask_show(state: State, database: str) -> None:
    """Print DB's masking rules."""
    resp = _call(state, "GetMaskingRules", spb.GetMaskingRulesRequest(database=database), 30.0)
    if state.json:
        output.emit_json({"database": resp.database, "rules": resp.rules,
                          "digest": resp.digest})
    elif not resp.rules:
        click.echo(f"{resp.database} has no masking rules.")
    else:
        click.echo(resp.rules, nl=False)


def create_masked(state: State, database: str, name: str, parent: str) -> None:
    """For `cygnet branch create --masked`: prints the branch like `branch create`."""
    req = spb.CreateMaskedBranchRequest(database=database, name=name, parent=parent,
                                        request_id=str(uuid.uuid4()))
    label = f"{database}/{name}"
    with working(f"Creating masked branch {label}", f"Created masked branch {label}"):
        resp: spb.CreateMaskedBranchResponse = _call(state, "CreateMaskedBranch", req, None)
    if state.json:
        output.emit_json({"branch": shapes.branch(resp.branch),
                          "connection": shapes.connection(resp.connection),
                          "masked_snapshot": resp.masked_snapshot, "built": resp.built,
                          "seconds": resp.build_seconds})
        return
    output.show(views.branch_fields(resp.branch), "",
                views.connection_fields(resp.connection))
    how = "built now" if resp.built else "already built"
    output.show("", f"A clone of the masked snapshot {resp.masked_snapshot} ({how}); "
                    "its password is the masked branches' own.")
