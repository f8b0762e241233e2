"""The root `cygnet` group: global options and the nouns under it."""

from __future__ import annotations

from pathlib import Path

import click

from cygnet.cli.commands.backup import backup
from cygnet.cli.commands.branch import branch
from cygnet.cli.commands.completion import completion
from cygnet.cli.commands.connect import connect
from cygnet.cli.commands.db import db
from cygnet.cli.commands.host import host, version
from cygnet.cli.commands.hosts import hosts
from cygnet.cli.commands.snapshot import snapshot
from cygnet.cli.fleet import coordinator_option
from cygnet.cli.state import OrderedGroup, State
from cygnet.cli.target import DEFAULT_SOCKET

EPILOG = """\b
Quick tour:
  cygnet db create shop                        # a database; its main branch starts
  cygnet branch create shop/feature            # a copy-on-write branch of main
  cygnet connect shop/feature --psql           # psql on the branch
  cygnet snapshot create shop/feature clean    # a named point on the branch
  cygnet branch reset shop/feature --to clean  # back to that point
  cygnet branch tree shop                      # the lineage, with state and size
  cygnet branch rm shop/feature
  cygnet db rm shop

\b
Exit codes: 0 ok, 1 other error, 2 invalid input or usage, 3 not found,
4 conflict (exists already / not in a state that allows it), 5 daemon unreachable
or this client's certificate refused.
Documentation: docs/cli.md"""


SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=OrderedGroup, epilog=EPILOG, context_settings=SETTINGS)
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
def cli(ctx: click.Context, socket_path: Path, host: str | None, ca: Path | None,
        cert: Path | None, key: Path | None, server_name: str | None, timeout: float | None,
        json_: bool, debug: bool) -> None:
    """Operate cygnetd: PostgreSQL databases with instant copy-on-write branches on ZFS.

    Talks to the local daemon over its unix socket, or to a remote one with
    --host. Commands are noun then verb: `cygnet db create`, `cygnet branch
    reset`, and so on; each has --help with examples.
    """
    state = ctx.ensure_object(State)
    state.socket, state.host, state.ca = socket_path, host or None, ca
    state.server_name, state.timeout = server_name, timeout
    state.cert, state.key = cert, key
    state.json = state.json or json_
    state.debug = state.debug or debug
    ctx.call_on_close(state.close)


for command in (db, branch, snapshot, backup, connect, host, hosts, version, completion):
    cli.add_command(command)
