"""`cygnet schema`: diff two branches' schemas, merge schema changes between branches."""

from __future__ import annotations

import json
import uuid
from typing import Any

import click
import grpc

from cygnet.api.v1 import schema_pb2 as spb
from cygnet.api.v1 import schema_pb2_grpc
from cygnet.cli import complete, output
from cygnet.cli.errors import CliError, Exit
from cygnet.cli.refs import branch_ref
from cygnet.cli.rpcerrors import from_rpc
from cygnet.cli.state import OrderedGroup, State, json_option, pass_state

QUERY_TIMEOUT = 60.0


def _call(state: State, method: str, request: Any, timeout: float | None) -> Any:
    with state.target().channel() as channel:
        stub = schema_pb2_grpc.SchemaStub(channel)  # type: ignore[no-untyped-call]
        try:
            return getattr(stub, method)(request, timeout=state.timeout or timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                refusal = state.target().refusal()
                if refusal is not None:
                    raise refusal from exc
            raise from_rpc(exc, state.target().address, True) from exc


def _change(c: spb.SchemaChange) -> dict[str, Any]:
    return {"action": c.action, "kind": c.kind, "name": c.name,
            "before": json.loads(c.before) if c.before else None,
            "after": json.loads(c.after) if c.after else None,
            **({"because": c.because} if c.because else {})}


def _common(resp: Any) -> dict[str, Any]:
    return {"changes": [_change(c) for c in resp.changes],
            "statements": [{"sql": s.sql, "when": s.when, "object": s.object}
                           for s in resp.statements],
            "hazards": [{"kind": h.kind, "object": h.object, "message": h.message}
                        for h in resp.hazards],
            "script": resp.script}


def _show_changes(resp: Any) -> None:
    rows = [(c.action, c.kind, c.name, c.because) for c in resp.changes]
    output.show(output.table(["ACTION", "KIND", "NAME", "BECAUSE OF"], rows))
    if resp.hazards:
        click.echo("\nHazards:")
        for h in resp.hazards:
            click.echo(f"  {h.kind}: {h.message}")


@click.group(cls=OrderedGroup)
def schema() -> None:
    """Compare branch schemas and merge schema changes between branches.

    Only the schema is compared and merged: rows in tables never move between
    branches. See docs/schema.md.
    """


@schema.command("diff", epilog="""\b
Examples:
  cygnet schema diff shop/main shop/feature          # what feature changed
  cygnet schema diff shop/main shop/feature --sql | psql ...
  cygnet schema diff shop shop/feature --json""")
@click.argument("a", metavar="DB/A", shell_complete=complete.branches)
@click.argument("b", metavar="DB/B", shell_complete=complete.branches)
@click.option("--sql", "as_sql", is_flag=True,
              help="Print only the DDL that turns A's schema into B's, in dependency order.")
@click.option("--dbname", default="", metavar="NAME",
              help="The SQL database inside both branches (default: postgres).")
@json_option
@pass_state
def diff(state: State, a: str, b: str, as_sql: bool, dbname: str) -> None:
    """What differs between the schemas of branches A and B (B is the goal)."""
    req = spb.SchemaDiffRequest(a=branch_ref(a), b=branch_ref(b), dbname=dbname)
    resp = _call(state, "SchemaDiff", req, QUERY_TIMEOUT)
    if as_sql:
        click.echo(resp.script, nl=False)
    elif state.json:
        output.emit_json({"a": resp.a, "b": resp.b, **_common(resp)})
    elif not resp.changes:
        click.echo(f"{resp.a} and {resp.b} have the same schema.")
    else:
        _show_changes(resp)


@schema.command("merge", epilog="""\b
Examples:
  cygnet schema merge shop/feature --into shop/main --dry-run
  cygnet schema merge shop/feature --into shop/main
  cygnet schema merge shop/feature --into shop/main --rename public.users.name=full_name
\b
Exit codes: 0 merged (or nothing to merge, or a passing dry run),
4 conflicts or a failed rehearsal (nothing applied), 1 a partial merge.""")
@click.argument("source", metavar="DB/SOURCE", shell_complete=complete.branches)
@click.option("--into", "target", required=True, metavar="DB/TARGET",
              shell_complete=complete.branches, help="The branch that gets the changes.")
@click.option("--dry-run", is_flag=True, help="Rehearse and report; change nothing.")
@click.option("--rename", "renames", multiple=True, metavar="OLD=NEW",
              help="A rename on the source, not a drop and a create: SCHEMA.TABLE=NEW or "
                   "SCHEMA.TABLE.COLUMN=NEW (repeatable).")
@click.option("--concurrently", is_flag=True,
              help="Build new indexes on existing tables with CREATE INDEX CONCURRENTLY.")
@click.option("--dbname", default="", metavar="NAME",
              help="The SQL database inside both branches (default: postgres).")
@json_option
@pass_state
def merge(state: State, source: str, target: str, dry_run: bool, renames: tuple[str, ...],
          concurrently: bool, dbname: str) -> None:
    """Apply the schema changes made on SOURCE since its merge base to TARGET."""
    req = spb.MergeSchemaRequest(source=branch_ref(source), target=branch_ref(target),
                                 dry_run=dry_run, renames=list(renames), dbname=dbname,
                                 concurrently=concurrently, request_id=str(uuid.uuid4()))
    resp = _call(state, "MergeSchema", req, None)
    if state.json:
        output.emit_json(_merge_json(resp))
    else:
        _show_merge(resp)
    if resp.outcome in ("conflicts", "rehearsal-failed"):
        raise CliError(f"merge: {resp.outcome}; nothing was applied", Exit.CONFLICT)
    if resp.outcome not in ("merged", "dry-run", "nothing-to-merge"):
        raise CliError(f"merge: {resp.outcome}: {resp.recovery}", Exit.ERROR)


def _merge_json(resp: spb.MergeSchemaResponse) -> dict[str, Any]:
    r = resp.rehearsal
    return {"outcome": resp.outcome, "base": resp.base, "applied": resp.applied,
            "note": resp.note, **_common(resp),
            "conflicts": [{"kind": c.kind, "name": c.name, "base": c.base, "source": c.source,
                           "target": c.target} for c in resp.conflicts],
            "rehearsal": {"ok": r.ok, "duration_seconds": r.duration_seconds,
                          "error": r.error, "failed_statement": r.failed_statement}
            if resp.HasField("rehearsal") else None,
            "recovery": resp.recovery, "duration_seconds": resp.duration_seconds}


def _show_merge(resp: spb.MergeSchemaResponse) -> None:
    click.echo(f"Merge base: {resp.base}")
    for c in resp.conflicts:
        click.echo(f"\nConflict: {c.kind} {c.name}")
        for side, text in (("base", c.base), ("source", c.source), ("target", c.target)):
            click.echo(f"  {side}: {text or '(absent)'}")
    if resp.changes:
        click.echo("")
        _show_changes(resp)
    if resp.HasField("rehearsal"):
        r = resp.rehearsal
        verdict = "passed" if r.ok else f"FAILED: {r.error} (in: {r.failed_statement})"
        click.echo(f"\nRehearsal on a throwaway clone of the target: {verdict}, "
                   f"{r.duration_seconds:.2f} s")
    if resp.recovery:
        click.echo(f"\n{resp.recovery}")
    click.echo(f"\nOutcome: {resp.outcome}{' (applied)' if resp.applied else ''}")
    click.echo(f"Note: {resp.note}.")
