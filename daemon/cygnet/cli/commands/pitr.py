"""Point in time: `cygnet branch history`, `cygnet branch restore` and the
--at/--at-lsn options of `cygnet branch create` (docs/durability.md)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.cli import complete, output, shapes, views
from cygnet.cli.confirm import confirm, destructive_options
from cygnet.cli.progress import working
from cygnet.cli.refs import branch_ref, describe
from cygnet.cli.state import State, db_option, json_option, pass_state

AT_HELP = ("A time with its zone, e.g. '2026-11-25 14:03:00+00' (ISO 8601; Z for UTC).")
AT_LSN_HELP = "A WAL position, e.g. 0/3000060."


def set_point(req: Any, at: str | None, at_lsn: str | None) -> bool:
    """Sets at_time or at_lsn on `req`; False when neither is given."""
    if at and at_lsn:
        raise click.UsageError("give at most one of --at and --at-lsn")
    if at:
        try:
            when = dt.datetime.fromisoformat(at.strip())
        except ValueError:
            raise click.BadParameter(f"{at!r} is not a time such as '2026-11-25 14:03:00+00'",
                                     param_hint="--at") from None
        if when.tzinfo is None:
            raise click.BadParameter(f"{at!r} has no time zone: add one, e.g. +00 for UTC",
                                     param_hint="--at")
        req.at_time.FromDatetime(when.astimezone(dt.UTC))
        return True
    if at_lsn:
        req.at_lsn = at_lsn.strip()
        return True
    return False


def _point(p: pb.RecoveryPoint) -> str:
    return f"{output.timestamp(p.time)}  (LSN {p.lsn})"


def _point_shape(p: pb.RecoveryPoint) -> dict[str, Any]:
    return {"time": shapes.iso(p.time), "lsn": p.lsn}


@click.command("history", epilog="""\b
Examples:
  cygnet branch history shop                  # main's recoverable window
  cygnet branch history shop/feature --json""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@db_option
@json_option
@pass_state
def history(state: State, ref: str, db: str | None) -> None:
    """Show the points in time BRANCH can be recovered to.

    The earliest and latest recoverable points, the snapshots recovery can
    start from (the branch's own, and its ancestors' before its fork) and
    the archived WAL generations its history is made of.
    """
    target = branch_ref(ref, db)
    h: pb.BranchHistoryResponse = state.client().branch_history(target)
    if state.json:
        output.emit_json({
            "archiving": h.archiving,
            "earliest": _point_shape(h.earliest) if h.HasField("earliest") else None,
            "latest": _point_shape(h.latest) if h.HasField("latest") else None,
            "snapshots": [{"id": s.snapshot_id, "name": s.name, "branch": s.branch,
                           "kind": s.kind, **_point_shape(s.point)} for s in h.snapshots],
            "generations": [{"branch_id": g.branch_id, "generation": g.generation,
                             "start_lsn": g.start_lsn, "files": g.files, "bytes": g.bytes}
                            for g in h.generations],
            "backups": [{"id": b.backup_id, "created_at": shapes.iso(b.created_at),
                         "branch": b.branch, "trigger": b.trigger,
                         "logical_bytes": b.logical_bytes} for b in h.backups]})
        return
    window = (("Earliest", _point(h.earliest)), ("Latest", _point(h.latest))) \
        if h.HasField("earliest") else (("Window", "nothing recoverable yet"),)
    output.show(output.fields([("Branch", describe(target)),
                               ("Archiving", "on" if h.archiving else "off"), *window]))
    if h.snapshots:
        output.show("", output.table(
            ("SNAPSHOT", "ON BRANCH", "KIND", "RECOVERS FROM", "LSN"),
            [(s.name, s.branch, s.kind, output.timestamp(s.point.time), s.point.lsn)
             for s in h.snapshots]))
    if h.generations:
        output.show("", output.table(
            ("ARCHIVE", "GENERATION", "STARTS AT", "FILES", "SIZE"),
            [(g.branch_id, str(g.generation), g.start_lsn, str(g.files), output.size(g.bytes))
             for g in h.generations]))
    if h.backups:
        output.show("", output.table(
            ("BACKUP", "OF BRANCH", "TAKEN", "TRIGGER", "SIZE"),
            [(b.backup_id, b.branch, output.timestamp(b.created_at), b.trigger or "manual",
              output.size(b.logical_bytes)) for b in h.backups]))


@click.command("restore", epilog="""\b
Examples:
  cygnet branch restore shop --at '2026-11-25 14:03:00+00'
  cygnet branch restore shop/feature --at-lsn 0/3000060 --yes""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@click.option("--at", "at", metavar="TIME", default=None, help=AT_HELP)
@click.option("--at-lsn", "at_lsn", metavar="LSN", default=None, help=AT_LSN_HELP)
@db_option
@destructive_options
@json_option
@pass_state
def restore(state: State, ref: str, at: str | None, at_lsn: str | None, db: str | None,
            yes: bool, dry_run: bool) -> None:
    """Roll BRANCH back to a point in time, in place.

    Same name, port, password and connection string; open connections are
    dropped. The state it replaces is kept as the stopped branch
    NAME_before_TIME, so the restore itself loses nothing.
    """
    req = pb.RestoreBranchRequest(branch=branch_ref(ref, db))
    if not set_point(req, at, at_lsn):
        raise click.UsageError("give the point to restore to: --at TIME or --at-lsn LSN")
    name = describe(req.branch)
    point = at or at_lsn
    # Nothing is destroyed (the replaced state is kept), but open connections are.
    if not confirm(f"restore branch {name} to {point}", lambda: [],
                   yes=yes, dry_run=dry_run, json_output=state.json):
        return
    with working(f"Restoring branch {name} to {point}", f"Restored branch {name}"):
        resp: pb.RestoreBranchResponse = state.client().restore_branch(req)
    if state.json:
        output.emit_json({"branch": shapes.branch(resp.branch),
                          "kept": shapes.branch(resp.kept) if resp.HasField("kept") else None})
        return
    output.show(views.branch_fields(resp.branch))
    if resp.HasField("kept"):
        output.show("", f"The replaced state is kept as branch {resp.kept.name} (stopped).")


@click.command("restore", epilog="""\b
Examples:
  cygnet db restore shop                                  # as it was last archived
  cygnet db restore shop --at '2026-11-25 14:03:00+00' --as shop-then
  cygnet db restore shop --from-host db-07              # a lost host's, off-host""")
@click.argument("name", metavar="NAME")
@click.option("--at", "at", metavar="TIME", default=None, help=AT_HELP)
@click.option("--at-lsn", "at_lsn", metavar="LSN", default=None, help=AT_LSN_HELP)
@click.option("--as", "new_name", metavar="NEW", default="",
              help="Name of the restored database (default: NAME).")
@click.option("--pool", default="", help="ZFS pool (default: the one with most free space).")
@click.option("--from-host", "from_host", metavar="HOST_ID", default="",
              help="Restore from the off-host repository, from what host HOST_ID uploaded "
              "(e.g. a lost host); default: this host's repository.")
@json_option
@pass_state
def restore_database(state: State, name: str, at: str | None, at_lsn: str | None,
                     new_name: str, pool: str, from_host: str) -> None:
    """Bring back deleted database NAME from this host's repository.

    Its main's newest backup at or before the point is restored, then its
    archived WAL is replayed to the point (default: the newest archived WAL).
    The result is a new database (new ids and password).
    """
    req = pb.RestoreDatabaseRequest(name=name, new_name=new_name, pool=pool, from_host=from_host)
    set_point(req, at, at_lsn)
    shown = new_name or name
    with working(f"Restoring database {name}", f"Restored database {shown}"):
        resp: pb.CreateDatabaseResponse = state.client().restore_database(req)
    views.show_new_database(resp, state.json)
