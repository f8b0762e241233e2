"""`cygnet replica create|list|rm|promote`: hot standbys on other hosts (needs --coordinator)."""

from __future__ import annotations

import click

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.api.v1 import coordinator_pb2 as cpb
from cygnet.cli import output
from cygnet.cli.confirm import confirm, destructive_options
from cygnet.cli.fleet import Coordinator, coordinator
from cygnet.cli.state import OrderedGroup, State, json_option, pass_state

# Seeding sends the whole database; a switchover waits for the replica.
LONG_TIMEOUT = 3600.0


def shape(r: apb.Replica) -> dict[str, object]:
    return {"database": r.database_name, "database_id": r.database_id, "host": r.host_id,
            "primary_host": r.primary_host_id, "state": r.state,
            "lag_bytes": r.lag_bytes, "lag_seconds": round(r.lag_seconds, 3),
            "replay_lsn": r.replay_lsn, "synchronous": r.synchronous,
            "connection": r.connection.uri, "seed_bytes": r.seed_bytes,
            "seed_seconds": round(r.seed_seconds, 3)}


def _long(ctx: click.Context, state: State) -> Coordinator:
    client = coordinator(ctx, state)
    if state.timeout is None:  # --timeout, when given, wins
        client.timeout = LONG_TIMEOUT
    return client


@click.group(cls=OrderedGroup)
def replica() -> None:
    """Hot standbys of a database on other hosts, and planned switchovers (docs/ha.md)."""


@replica.command(epilog="""\b
Examples:
  cygnet --coordinator coord:7434 replica create shop            # placement picks the host
  cygnet --coordinator coord:7434 replica create shop --on db-18 --sync""")
@click.argument("database")
@click.option("--on", "host_id", default="", help="The replica's host (default: placement "
              "chooses one; never the primary's).")
@click.option("--sync", is_flag=True, help="Commits wait for one replica of the database "
              "(ANY 1 of its replicas: RPO 0).")
@json_option
@pass_state
@click.pass_context
def create(ctx: click.Context, state: State, database: str, host_id: str, sync: bool) -> None:
    """Add a replica of DATABASE: seeded by zfs send, then streaming over TLS."""
    r = _long(ctx, state).call("CreateReplica", cpb.FleetCreateReplicaRequest(
        database=database, host_id=host_id, synchronous=sync))
    if state.json:
        output.emit_json(shape(r))
        return
    click.echo(f"{r.database_name}: replica on {r.host_id} {r.state} "
               f"(seeded {output.size(r.seed_bytes)} in {r.seed_seconds:.1f}s)")
    click.echo(f"read-only: {r.connection.uri}")


@replica.command("list", epilog="Example:\n  cygnet --coordinator coord:7434 replica list shop")
@click.argument("database")
@json_option
@pass_state
@click.pass_context
def list_(ctx: click.Context, state: State, database: str) -> None:
    """List DATABASE's replicas: host, state and lag."""
    found = coordinator(ctx, state).call("ListReplicas", cpb.FleetListReplicasRequest(
        database=database)).replicas
    if state.json:
        output.emit_json([shape(r) for r in found])
        return
    rows = [[r.host_id, r.primary_host_id, output.state(r.state), output.size(r.lag_bytes),
             f"{r.lag_seconds:.1f}s", "sync" if r.synchronous else "async", r.connection.host
             and f"{r.connection.host}:{r.connection.port}"] for r in found]
    output.show(output.table(["HOST", "PRIMARY", "STATE", "LAG", "LAG TIME", "MODE",
                              "ADDRESS"], rows))


@replica.command("rm", epilog="Example:\n  cygnet --coordinator coord:7434 replica rm shop "
                 "--on db-18 --yes")
@click.argument("database")
@click.option("--on", "host_id", required=True, help="The replica's host.")
@destructive_options
@json_option
@pass_state
@click.pass_context
def rm(ctx: click.Context, state: State, database: str, host_id: str, yes: bool,
       dry_run: bool) -> None:
    """Remove DATABASE's replica on HOST (its data, and its slot on the primary)."""
    if not confirm(f"remove the replica of {database} on {host_id}",
                   lambda: [f"replica {database} on {host_id}"], yes=yes, dry_run=dry_run,
                   json_output=state.json):
        return
    done = _long(ctx, state).call("DeleteReplica", cpb.FleetDeleteReplicaRequest(
        database=database, host_id=host_id))
    if state.json:
        output.emit_json({"database_id": done.database_id, "host": host_id, "removed": True})
    else:
        click.echo(f"{database}: replica on {host_id} removed")


@replica.command(epilog="""\b
Examples:
  cygnet --coordinator coord:7434 replica promote shop --on db-18
  cygnet --coordinator coord:7434 replica promote shop --max-lag 64MiB --force""")
@click.argument("database")
@click.option("--on", "host_id", default="", help="The replica to promote (default: the "
              "one that lags least).")
@click.option("--max-lag", "max_lag", type=int, default=0,
              help="Refuse a replica lagging more bytes than this (default 16 MiB).")
@click.option("--force", is_flag=True, help="Promote even a lagging or disconnected replica.")
@click.option("--remove-old", is_flag=True, help="Destroy the old primary instead of making "
              "it a replica.")
@json_option
@pass_state
@click.pass_context
def promote(ctx: click.Context, state: State, database: str, host_id: str, max_lag: int,
            force: bool, remove_old: bool) -> None:
    """Planned switchover: the replica becomes DATABASE's primary, no commit lost."""
    r = _long(ctx, state).call("PromoteReplica", cpb.FleetPromoteReplicaRequest(
        database=database, host_id=host_id, max_lag_bytes=max_lag, force=force,
        remove_old_primary=remove_old))
    downtime = r.downtime.ToNanoseconds() / 1e9
    if state.json:
        output.emit_json({"new_primary": r.new_primary.host_id,
                          "old_primary": r.old_primary_host_id, "stop_lsn": r.stop_lsn,
                          "downtime_seconds": round(downtime, 3),
                          "old_primary_state": r.old_primary.state or r.old_primary_message})
        return
    click.echo(f"{database}: primary is now on {r.new_primary.host_id} (was "
               f"{r.old_primary_host_id}; writes paused {downtime:.2f}s, stopped at "
               f"{r.stop_lsn})")
    click.echo(f"old primary: {r.old_primary.state and 'replica, ' + r.old_primary.state}"
               if r.old_primary.host_id else f"old primary: {r.old_primary_message}")
