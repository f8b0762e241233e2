"""`cygnet hosts list|drain|undrain`: the fleet, as the coordinator sees it."""

from __future__ import annotations

import click

from cygnet.api.v1 import coordinator_pb2 as cpb
from cygnet.cli import output
from cygnet.cli.fleet import coordinator
from cygnet.cli.state import OrderedGroup, State, json_option, pass_state

STATES = {cpb.HOST_STATE_AVAILABLE: "available", cpb.HOST_STATE_UNAVAILABLE: "unavailable"}


def shape(h: cpb.FleetHost) -> dict[str, object]:
    return {"id": h.id, "address": h.address, "zone": h.zone, "labels": dict(h.labels),
            "state": STATES.get(h.state, "unknown"), "drained": h.drained,
            "databases": h.database_count, "utilisation": round(h.utilisation, 4),
            "memory_bytes": h.capacity.memory_bytes,
            "memory_reserved_bytes": h.memory_reserved_bytes,
            "running_clusters": h.capacity.running_clusters,
            "postgres_versions": list(h.capacity.postgres_versions)}


@click.group(cls=OrderedGroup)
def hosts() -> None:
    """The fleet's hosts (needs --coordinator)."""


@hosts.command("list", epilog="""\b
Example:
  CYGNET_TOKEN=... cygnet --coordinator coord.example:7435 --ca ca.pem hosts list""")
@json_option
@pass_state
@click.pass_context
def list_(ctx: click.Context, state: State) -> None:
    """List hosts: state, drain, databases placed and utilisation."""
    found = coordinator(ctx, state).call("ListHosts", cpb.ListHostsRequest()).hosts
    if state.json:
        output.emit_json([shape(h) for h in found])
        return
    rows = [[h.id, h.address, h.zone, output.state(STATES.get(h.state, "unknown")),
             "yes" if h.drained else "", str(h.database_count), f"{h.utilisation:.0%}"]
            for h in found]
    output.show(output.table(["HOST", "ADDRESS", "ZONE", "STATE", "DRAINED", "DATABASES",
                              "UTIL"], rows))


def _drain(ctx: click.Context, state: State, host_id: str, method: str) -> None:
    h = coordinator(ctx, state).call(method, cpb.DrainHostRequest(host_id=host_id))
    if state.json:
        output.emit_json(shape(h))
    else:
        click.echo(f"{h.id}: {'drained: no new placements' if h.drained else 'undrained'}")


@hosts.command(epilog="""\b
Examples:
  cygnet --coordinator coord:7434 hosts drain db-17
  cygnet --coordinator coord:7434 hosts drain db-17 --evacuate --concurrency 4""")
@click.argument("host_id", metavar="HOST")
@click.option("--evacuate", is_flag=True, help="Also move every database off HOST, to hosts "
              "placement picks (docs/ha.md); reports what could not be moved.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Moves at once with --evacuate.")
@json_option
@pass_state
@click.pass_context
def drain(ctx: click.Context, state: State, host_id: str, evacuate: bool,
          concurrency: int) -> None:
    """Stop placing new databases on HOST (its databases keep running, unless --evacuate)."""
    if not evacuate:
        _drain(ctx, state, host_id, "DrainHost")
        return
    from cygnet.cli import moves
    from cygnet.cli.errors import CliError, Exit

    client = coordinator(ctx, state)
    client.call("DrainHost", cpb.DrainHostRequest(host_id=host_id))
    moved, failed = moves.evacuate(client, host_id, concurrency, show=not state.json)
    if state.json:
        output.emit_json({"host": host_id, "moved": moved, "not_moved": failed})
    else:
        for m in moved:
            click.echo(f"moved {m['database']} to {m['to_host']}")
        for f in failed:
            click.echo(f"NOT moved {f['database']}: {f['error']}")
        click.echo(f"{host_id}: drained; {len(moved)} moved, {len(failed)} not moved")
    if failed:
        raise CliError(f"{len(failed)} database(s) could not be moved off {host_id}", Exit.ERROR)


@hosts.command(epilog="Example:\n  cygnet --coordinator coord:7434 hosts undrain db-17")
@click.argument("host_id", metavar="HOST")
@json_option
@pass_state
@click.pass_context
def undrain(ctx: click.Context, state: State, host_id: str) -> None:
    """Place new databases on HOST again."""
    _drain(ctx, state, host_id, "UndrainHost")
