"""`cygnet context list`: the named daemons of the config file."""

from __future__ import annotations

import json

import click

from cygnet.cli import contexts
from cygnet.cli.state import OrderedGroup, State, json_option, pass_state


@click.group(cls=OrderedGroup, epilog="""\b
Example ~/.config/cygnet/config.toml (or $CYGNET_CONFIG):
  current-context = "prod"

  [contexts.prod]
  host = "db7.example:7433"
  ca = "prod/ca.pem"              # relative to the file
  cert = "prod/client.pem"
  key = "prod/client.key"

  [contexts.local]
  socket = "/run/cygnet/cygnetd.sock"

Keys: socket, host, ca, cert, key, server-name, timeout, coordinator.""")
def context() -> None:
    """Named daemons, kubeconfig style: pick one with --context NAME or CYGNET_CONTEXT.

    Without either, the file's current-context is used. A flag or environment
    variable given explicitly wins over the context.
    """


@context.command("list", epilog="Example:\n  cygnet context list")
@json_option
@pass_state
@click.pass_context
def list_(ctx: click.Context, state: State) -> None:
    """List the contexts; `*` marks the one in use."""
    config = contexts.load()
    in_use = ctx.find_root().params.get("context_name") or config.current
    rows = [{"name": name, "current": name == in_use,
             "target": str(values.get("host") or values.get("socket") or "local socket")}
            for name, values in config.contexts.items()]
    if state.json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no contexts in {config.path}")
    for row in rows:
        click.echo(f"{'*' if row['current'] else ' '} {row['name']:<20} {row['target']}")
