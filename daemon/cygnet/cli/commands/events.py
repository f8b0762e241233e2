"""`cygnet events`: what happened on the host (WatchEvents), replayed and followed."""

from __future__ import annotations

import json
import sys

import click
import grpc

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc
from cygnet.cli.rpcerrors import from_rpc
from cygnet.cli.shapes import iso
from cygnet.cli.state import State, json_option, pass_state


def shape(e: pb.Event) -> dict[str, object]:
    return {"cursor": e.cursor, "time": iso(e.time), "kind": e.kind,
            "database_id": e.database_id, "database_name": e.database_name,
            "branch_id": e.branch_id or None, "branch_name": e.branch_name or None,
            "reason": e.reason or None}


def line(e: pb.Event) -> str:
    where = f"{e.database_name}/{e.branch_name}" if e.branch_name else e.database_name
    when = e.time.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ")
    reason = f"  {e.reason}" if e.reason else ""
    return f"{e.cursor:>8}  {when}  {e.kind:<9}  {where}{reason}"


@click.command("events", epilog="""\b
Examples:
  cygnet events                      # every event the host keeps, oldest first
  cygnet events --follow             # then new ones as they happen (Ctrl-C ends)
  cygnet events --since 1042 -f      # resume after cursor 1042
  cygnet events -f --json | jq -c 'select(.kind == "expired")'

The cursor of each event survives daemon restarts: a control plane resumes
with --since the last cursor it handled. A cursor the host has trimmed away
is refused (exit 2) with the oldest cursor it still keeps.""")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming new events.")
@click.option("--since", "since", metavar="CURSOR", type=click.IntRange(min=1), default=None,
              help="Only events after this cursor.")
@json_option
@pass_state
def events(state: State, follow: bool, since: int | None) -> None:
    """Show the host's events: created, ready, suspended, resumed, expired,
    deleted, failed, promoted, restored.

    With --json, one JSON object per line (JSON Lines), flushed as each arrives.
    """
    req = pb.WatchEventsRequest(cursor=since or 0, from_oldest=since is None, follow=follow)
    target = state.target()
    with target.channel() as channel:
        stub = agent_pb2_grpc.AgentStub(channel)  # type: ignore[no-untyped-call]
        try:
            for event in stub.WatchEvents(req, timeout=None if follow else state.timeout or 30):
                text = json.dumps(shape(event)) if state.json else line(event)
                click.echo(text)
                sys.stdout.flush()
        except grpc.RpcError as exc:
            raise from_rpc(exc, target.address, True) from exc
