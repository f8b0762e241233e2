"""The root `cygnet` group: global options and the nouns under it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from cygnet import __version__
from cygnet.cli import contexts
from cygnet.cli.fleet import META_KEY, coordinator_option
from cygnet.cli.lazy import Lazy, LazyGroup
from cygnet.cli.state import State
from cygnet.cli.target import DEFAULT_SOCKET

# Subcommands by import path, loaded only when run (see lazy.py); in this order in --help.
COMMANDS = {
    "status": Lazy("cygnet.cli.commands.status:status",
                   "One screen: host, pools, databases, branches and alerts."),
    "db": Lazy("cygnet.cli.commands.db:db", "Create, list, inspect and delete databases."),
    "branch": Lazy("cygnet.cli.commands.branch:branch",
                   "Create, inspect, reset, start, stop and delete branches."),
    "snapshot": Lazy("cygnet.cli.commands.snapshot:snapshot",
                     "Create, list and delete snapshots of a branch."),
    "backup": Lazy("cygnet.cli.commands.backup:backup",
                   "Back up branches, list, verify, restore and prune backups."),
    "schema": Lazy("cygnet.cli.commands.schema:schema",
                   "Diff branch schemas; merge schema changes between branches (not data)."),
    "migrate": Lazy("cygnet.cli.commands.migrate:migrate",
                    "Apply, list and roll back SQL migrations on a branch (rehearsed first)."),
    "mask": Lazy("cygnet.cli.commands.migrate:mask",
                 "Masking rules of a database, for masked branches."),
    "events": Lazy("cygnet.cli.commands.events:events",
                   "What happened on the host (created, expired, deleted...); --follow."),
    "connect": Lazy("cygnet.cli.commands.connect:connect",
                    "Print the connection string (or PG* variables) of a branch, or run psql."),
    "host": Lazy("cygnet.cli.commands.host:host",
                 "The host: its cygnetd, pools and Postgres versions."),
    "hosts": Lazy("cygnet.cli.commands.hosts:hosts", "The fleet's hosts (needs --coordinator)."),
    "replica": Lazy("cygnet.cli.commands.replica:replica",
                    "Replicas on other hosts; planned switchover (needs --coordinator)."),
    "context": Lazy("cygnet.cli.commands.context:context",
                    "List the named daemons of the config file (--context)."),
    "version": Lazy("cygnet.cli.commands.host:version",
                    "Print the client version (and the daemon's, if reachable)."),
    "completion": Lazy("cygnet.cli.commands.completion:completion",
                       "Print the shell script for tab completion."),
}

EPILOG = """\b
Quick tour:
  cygnet db create shop                        # a database; its main branch starts
  cygnet branch create shop/feature            # a copy-on-write branch of main
  cygnet connect shop/feature --psql           # psql on the branch
  cygnet snapshot create shop/feature clean    # a named point on the branch
  cygnet branch reset shop/feature --to clean  # back to that point
  cygnet branch tree shop                      # the lineage, with state and size
  cygnet branch rm shop/feature
  cygnet db rm shop --dry-run                  # what would be destroyed
  cygnet db rm shop --yes

\b
Exit codes: 0 ok, 1 other error, 2 invalid input or usage (or a destructive
command without a terminal and without --yes), 3 not found, 4 conflict (exists
already / not in a state that allows it), 5 daemon unreachable, 6 permission
denied (certificate or token refused, or the role may not do this).
Documentation: docs/cli.md"""


SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=LazyGroup, lazy=COMMANDS, epilog=EPILOG, context_settings=SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="cygnet",
                      message="%(prog)s %(version)s", help="Print the version and exit.")
@click.option("--context", "context_name", metavar="NAME", envvar="CYGNET_CONTEXT",
              show_envvar=True,
              help="A named daemon of ~/.config/cygnet/config.toml (default: its "
                   "current-context); flags given explicitly win.")
@click.option("--socket", "socket_path", type=click.Path(path_type=Path), envvar="CYGNET_SOCKET",
              default=DEFAULT_SOCKET, show_default=True, show_envvar=True,
              help="The local daemon's admin socket.")
@click.option("--host", metavar="HOST[:PORT]", envvar="CYGNET_HOST", show_envvar=True,
              help="Reach a remote daemon over mutual TLS instead (default port 7433); "
                   "needs --cert and --key.")
@click.option("--ca", type=click.Path(path_type=Path, dir_okay=False), envvar="CYGNET_CA",
              show_envvar=True,
              help="CA certificate to trust for --host (default: "
                   "/var/lib/cygnet/tls/ca.pem if it exists, else the system's).")
@click.option("--cert", type=click.Path(path_type=Path, dir_okay=False), envvar="CYGNET_CERT",
              show_envvar=True,
              help="Client certificate for --host (from `cygnet-coordinator pki issue "
                   "--role client`).")
@click.option("--key", type=click.Path(path_type=Path, dir_okay=False), envvar="CYGNET_KEY",
              show_envvar=True, help="The client certificate's key.")
@click.option("--server-name", metavar="NAME",
              help="Name expected in the daemon's certificate, if not the one in --host.")
@click.option("--timeout", type=click.FloatRange(min=0.1), metavar="SECONDS",
              help="Deadline of each API call (default: 30 for queries, 900 for changes).")
@click.option("--json", "json_", is_flag=True,
              help="Print results as JSON (shapes in docs/cli.md).")
@click.option("--debug", is_flag=True, help="Show tracebacks and gRPC logs on errors.")
@coordinator_option
@click.pass_context
def cli(ctx: click.Context, context_name: str | None, socket_path: Path, host: str | None,
        ca: Path | None, cert: Path | None, key: Path | None, server_name: str | None,
        timeout: float | None, json_: bool, debug: bool) -> None:
    """Operate cygnetd: PostgreSQL databases with instant copy-on-write branches on ZFS.

    Talks to the local daemon over its unix socket, or to a remote one with
    --host. Commands are noun then verb: `cygnet db create`, `cygnet branch
    reset`, and so on; each has --help with examples.
    """
    chosen = _context(ctx, context_name)
    socket_path, host = chosen.get("socket_path", socket_path), chosen.get("host", host)
    ca, cert, key = chosen.get("ca", ca), chosen.get("cert", cert), chosen.get("key", key)
    server_name = chosen.get("server_name", server_name)
    timeout = chosen.get("timeout", timeout)
    state = ctx.ensure_object(State)
    state.socket, state.host, state.ca = socket_path, host or None, ca
    state.server_name, state.timeout = server_name, timeout
    state.cert, state.key = cert, key
    state.json = state.json or json_
    state.debug = state.debug or debug
    ctx.call_on_close(state.close)

TARGET = {"socket_path", "host"}


def _context(ctx: click.Context, name: str | None) -> dict[str, Any]:
    """The chosen context's values for the options not given on the command line or
    in the environment."""
    config = contexts.load()
    name = name or config.current
    if not name:
        return {}
    values = contexts.settings(config, name)
    given = {p for p in ctx.params
             if ctx.get_parameter_source(p) not in (ParameterSource.DEFAULT, None)}
    if ctx.meta.get(META_KEY):
        given.add("coordinator")
    if given & TARGET:
        # --socket or --host on the command line names another daemon altogether.
        given |= TARGET | {"ca", "cert", "key", "server_name"}
    chosen = {k: v for k, v in values.items() if k not in given}
    if "coordinator" in chosen:
        ctx.meta[META_KEY] = chosen.pop("coordinator")
    return chosen
