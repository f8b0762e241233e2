"""`cygnet db schedule`: a database's automatic snapshots, cron backups and retention."""

from __future__ import annotations

import re
from typing import Any

import click

from cygnet.api.v1 import backup_pb2 as bpb
from cygnet.cli import complete, output
from cygnet.cli.commands import _backups as api
from cygnet.cli.shapes import Json, iso
from cygnet.cli.state import State, json_option, pass_state

_DURATION = re.compile(r"(\d+)([smhdw]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RULES = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly")


class Duration(click.ParamType):  # type: ignore[type-arg]
    """15m, 1h, 7d, 2w, 90s or a bare number of seconds; 0 or `off` is 0."""

    name = "DURATION"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "off":
            return 0
        match = _DURATION.fullmatch(text)
        if match is None:
            self.fail(f"{value!r} is not a duration such as 15m, 1h or 7d", param, ctx)
        return int(match.group(1)) * _SECONDS[match.group(2)]


def _duration(seconds: int) -> str:
    if not seconds:
        return "off"
    for unit in ("w", "d", "h", "m"):
        if seconds % _SECONDS[unit] == 0:
            return f"{seconds // _SECONDS[unit]}{unit}"
    return f"{seconds}s"


@click.command("schedule", epilog="""\b
Examples:
  cygnet db schedule shop                             # show it
  cygnet db schedule shop --snapshots-every 15m --backups '0 3 * * *' \\
      --keep-hourly 24 --keep-daily 7 --keep-weekly 4
  cygnet db schedule shop --backups off               # stop scheduled backups
  cygnet db schedule shop --defaults                  # back to the host's settings
\b
Cron expressions are in UTC. Retention applies per branch to automatic
snapshots and to scheduled backups alike: a point is kept if any rule keeps
it. Giving any --keep-* option replaces the whole retention.""")
@click.argument("database", metavar="DB", shell_complete=complete.databases)
@click.option("--snapshots-every", type=Duration(), default=None,
              help="Snapshot main every DURATION (15m, 1h...); 0 or off: no automatic "
                   "snapshots.")
@click.option("--backups", "cron", metavar="CRON", default=None,
              help="Back up main on this cron expression, e.g. '0 3 * * *'; off: none.")
@click.option("--keep-last", type=click.IntRange(min=1), default=None, metavar="N",
              help="Keep the newest N points.")
@click.option("--keep-hourly", type=click.IntRange(min=1), default=None, metavar="N",
              help="Keep the newest point of each of the last N hours.")
@click.option("--keep-daily", type=click.IntRange(min=1), default=None, metavar="N",
              help="... of each of the last N days.")
@click.option("--keep-weekly", type=click.IntRange(min=1), default=None, metavar="N",
              help="... of each of the last N weeks.")
@click.option("--keep-monthly", type=click.IntRange(min=1), default=None, metavar="N",
              help="... of each of the last N months.")
@click.option("--keep-within", type=Duration(), default=None,
              help="Keep every point younger than DURATION (e.g. 7d).")
@click.option("--defaults", is_flag=True,
              help="Forget this database's own values: use the host's (then apply the rest).")
@json_option
@pass_state
def schedule(state: State, database: str, snapshots_every: int | None, cron: str | None,
             keep_last: int | None, keep_hourly: int | None, keep_daily: int | None,
             keep_weekly: int | None, keep_monthly: int | None, keep_within: int | None,
             defaults: bool) -> None:
    """Show or set DB's schedule: automatic snapshots, cron backups, retention."""
    keeps = dict(zip(_RULES, (keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly),
                     strict=True))
    changing = defaults or any(v is not None for v in (
        snapshots_every, cron, keep_within, *keeps.values()))
    if not changing:
        result = api.call(state, "GetSchedule", bpb.GetScheduleRequest(database=database))
    else:
        req = bpb.SetScheduleRequest(database=database, use_defaults=defaults)
        if snapshots_every is not None:
            req.snapshot_every_seconds = snapshots_every
        if cron is not None:
            req.backup_cron = "" if cron.strip().lower() == "off" else cron
        if keep_within is not None or any(v is not None for v in keeps.values()):
            req.retention.CopyFrom(bpb.Retention(
                **{k: v or 0 for k, v in keeps.items()}, keep_within_seconds=keep_within or 0))
        result = api.call(state, "SetSchedule", req)
    if state.json:
        output.emit_json(shape(result))
    else:
        output.show(fields(result))


def retention_text(r: bpb.Retention) -> str:
    parts = [f"{k.removeprefix('keep_')} {getattr(r, k)}" for k in _RULES if getattr(r, k)]
    if r.keep_within_seconds:
        parts.append(f"within {_duration(r.keep_within_seconds)}")
    return ", ".join(parts) or "-"


def shape(s: bpb.Schedule) -> Json:
    r = s.retention
    return {
        "database_id": s.database_id, "database_name": s.database_name,
        "snapshot_every_seconds": s.snapshot_every_seconds, "backup_cron": s.backup_cron,
        "retention": {**{k: getattr(r, k) for k in _RULES},
                      "keep_within_seconds": r.keep_within_seconds},
        "host_defaults": list(s.host_defaults),
        "last_snapshot_at": iso(s.last_snapshot_at) if s.HasField("last_snapshot_at") else None,
        "last_backup_at": iso(s.last_backup_at) if s.HasField("last_backup_at") else None,
        "next_backup_at": iso(s.next_backup_at) if s.HasField("next_backup_at") else None,
        "oldest_retained_at": (iso(s.oldest_retained_at) if s.HasField("oldest_retained_at")
                               else None),
        "last_error": s.last_error or None,
    }


def fields(s: bpb.Schedule) -> Any:
    def default(what: str) -> str:
        return " (host default)" if what in s.host_defaults else ""

    def when(field: str) -> str:
        return output.timestamp(getattr(s, field)) if s.HasField(field) else "-"  # type: ignore[arg-type]

    return output.fields([
        ("Database", f"{s.database_name} ({s.database_id})"),
        ("Snapshots", (f"every {_duration(s.snapshot_every_seconds)}"
                       if s.snapshot_every_seconds else "off") + default("snapshot_every")),
        ("Backups", (s.backup_cron or "off") + default("backup_cron")),
        ("Retention", retention_text(s.retention) + default("retention")),
        ("Last snapshot", when("last_snapshot_at")),
        ("Last backup", when("last_backup_at")),
        ("Next backup", when("next_backup_at")),
        ("Oldest kept", when("oldest_retained_at")),
        *([("Last error", s.last_error)] if s.last_error else []),
    ])
