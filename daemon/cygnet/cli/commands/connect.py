"""`cygnet connect`: the connection string of a branch, or psql on it."""

from __future__ import annotations

import os
import shlex
import shutil
from typing import Any

import click

from cygnet.cli import complete, output, pgpass, shapes
from cygnet.cli.errors import CliError, Exit
from cygnet.cli.refs import branch_ref
from cygnet.cli.state import State, db_option, json_option, pass_state


@click.command(epilog="""BRANCH is DB/BRANCH, BRANCH with --db DB, a branch id, or DB for
its main branch.

The string goes through the host's Postgres endpoint (docs/endpoints.md), by name:
it stays the same across reset, restore, promote, suspend and resume. --direct
gives the branch's own port instead.

\b
Examples:
  cygnet connect shop                      # main's connection string
  psql "$(cygnet connect shop/feature)"
  cygnet connect shop/feature --psql
  cygnet connect shop --psql -- -c 'select 1'
  eval "$(cygnet connect shop/feature --env)" && psql   # PG* variables; password in ~/.pgpass""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@click.argument("psql_args", nargs=-1, metavar="[-- PSQL_ARGS]")
@click.option("--psql", "run_psql", is_flag=True, help="Run psql on the branch instead.")
@click.option("--direct", is_flag=True,
              help="The branch's own port instead of the host's endpoint.")
@click.option("--env", "env", is_flag=True,
              help="Print `export PGHOST=...` lines for libpq tools instead; the password goes "
                   "to ~/.pgpass (or $PGPASSFILE), never to stdout.")
@db_option
@json_option
@pass_state
def connect(state: State, ref: str, psql_args: tuple[str, ...], run_psql: bool, direct: bool,
            env: bool, db: str | None) -> None:
    """Print the connection string of a branch, or run psql on it.

    The URI carries the branch's password: treat it as a secret.
    """
    conn = state.client().connection(branch_ref(ref, db))
    uri = conn.uri if direct or not conn.endpoint_uri else conn.endpoint_uri
    if run_psql:
        psql = shutil.which("psql")
        if psql is None:
            raise CliError("psql: not found on PATH (install postgresql-client)")
        state.close()
        os.execv(psql, ["psql", uri, *psql_args])
    if psql_args:
        raise click.UsageError("extra arguments are passed to psql: add --psql")
    if env:
        _print_env(conn)
        return
    if state.json:
        output.emit_json(shapes.connection(conn))
    else:
        click.echo(uri)


def _print_env(conn: Any) -> None:
    file = pgpass.path()
    try:
        pgpass.store(file, conn.host, conn.port, conn.dbname, conn.user, conn.password)
    except OSError as exc:
        raise CliError(f"--env: cannot write {file}: {exc.strerror}", Exit.ERROR) from exc
    values = {"PGHOST": conn.host, "PGPORT": str(conn.port), "PGUSER": conn.user,
              "PGDATABASE": conn.dbname, "PGSSLMODE": conn.sslmode or "require"}
    if conn.sslrootcert:
        values["PGSSLROOTCERT"] = conn.sslrootcert
    for name, value in values.items():
        click.echo(f"export {name}={shlex.quote(value)}")
    click.echo(f"# password stored in {file}", err=True)
