"""`cygnet host status` and `cygnet version`."""

from __future__ import annotations

import click

from cygnet import __version__
from cygnet.cli import output, shapes, views
from cygnet.cli.client import Client
from cygnet.cli.errors import CliError
from cygnet.cli.state import OrderedGroup, State, json_option, pass_state

# `version` must answer quickly even when the daemon is far away or gone.
VERSION_TIMEOUT = 5.0


@click.group(cls=OrderedGroup)
def host() -> None:
    """The host: its cygnetd, pools and Postgres versions."""


@host.command("status", epilog="""\b
Example:
  cygnet host status
  cygnet --host db7.example:7433 host status --json""")
@json_option
@pass_state
def status(state: State) -> None:
    """Show the daemon, its ZFS pools and what runs on them.

    Daemon version, ZFS dialect, Postgres versions, counts of databases,
    branches and running clusters, and each pool's health and space.
    """
    h = state.client().host_status()
    if state.json:
        output.emit_json(shapes.host(h))
    else:
        output.show(*views.host_view(h))


@click.command()
@json_option
@pass_state
def version(state: State) -> None:
    """Print the client version (and the daemon's, if reachable)."""
    client = Client(state.target(), state.timeout or VERSION_TIMEOUT)
    daemon: str | None = None
    problem = ""
    try:
        daemon = client.host_status().version
    except CliError as exc:
        problem = exc.message
    finally:
        client.close()
    if state.json:
        output.emit_json({"client_version": __version__, "daemon_version": daemon})
        return
    click.echo(f"cygnet {__version__}")
    click.echo(f"cygnetd {daemon}" if daemon else f"cygnetd: unknown ({problem})")
