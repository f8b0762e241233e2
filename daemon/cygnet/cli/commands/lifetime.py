"""`cygnet branch update`: a branch's expiry and protection; the --ttl of create."""

from __future__ import annotations

import datetime as dt

import click

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.cli import complete, output, shapes, views
from cygnet.cli.progress import working
from cygnet.cli.refs import branch_ref, describe
from cygnet.cli.state import State, db_option, json_option, pass_state
from cygnet.durations import BadDuration, parse_duration


def seconds(text: str, option: str) -> int:
    """A duration option's value, or a usage error naming the option (exit 2)."""
    try:
        return parse_duration(text, option)
    except BadDuration as exc:
        raise click.BadParameter(exc.reason, param_hint=option) from None


def idle_seconds(text: str, option: str = "--suspend-after") -> int:
    """An idle timeout: a duration, or 0 / never for never (agent/scale.py)."""
    return 0 if text.strip().lower() in ("0", "never") else seconds(text, option)


def moment(text: str, option: str) -> dt.datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a time such as 2026-12-01T18:00:00Z",
                                 param_hint=option) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@click.command("update", epilog="""BRANCH is DB/BRANCH, BRANCH with --db DB, a branch id, or DB
for its main branch (which can be protected, and never expires).

\b
Examples:
  cygnet branch update shop/pr-42 --ttl 7d            # deleted 7 days from now
  cygnet branch update shop/pr-42 --expires-at 2026-12-24T18:00:00Z
  cygnet branch update shop/pr-42 --no-expiry
  cygnet branch update shop/demo --protect            # until unprotected (admin)
  cygnet branch update shop/demo --protect-for 30d    # a lease: lapses by itself
  cygnet branch update shop/demo --unprotect          # admin only

A branch never expires before its children: its effective expiry is the
latest of its own, its protection's end and its children's (docs/cli.md).""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@click.option("--ttl", metavar="DURATION", default=None,
              help="Expire this long from now: 90s, 30m, 12h, 7d, 2w, 1d12h.")
@click.option("--expires-at", "expires_at", metavar="TIME", default=None,
              help="Expire at this ISO 8601 time (UTC unless it says otherwise).")
@click.option("--no-expiry", "no_expiry", is_flag=True, help="Never expire.")
@click.option("--protect", is_flag=True,
              help="Refuse delete, reset and expiry without the admin's override.")
@click.option("--protect-for", "protect_for", metavar="DURATION", default=None,
              help="Protect, for this long only (a lease).")
@click.option("--unprotect", is_flag=True, help="Remove the protection (admin role).")
@click.option("--suspend-after", "suspend_after", metavar="IDLE", default=None,
              help="Suspend it after this long without a client connection (5m, 2h; "
                   "0 or never: never; `default`: back to the host's setting).")
@db_option
@json_option
@pass_state
def update(state: State, ref: str, ttl: str | None, expires_at: str | None, no_expiry: bool,
           protect: bool, protect_for: str | None, unprotect: bool, db: str | None,
           suspend_after: str | None = None) -> None:
    """Set or clear a branch's expiry, and protect or unprotect it."""
    if (ttl is not None) + (expires_at is not None) + no_expiry > 1:
        raise click.UsageError("give at most one of --ttl, --expires-at and --no-expiry")
    if unprotect and (protect or protect_for):
        raise click.UsageError("--unprotect goes with neither --protect nor --protect-for")
    target = branch_ref(ref, db)
    req = pb.UpdateBranchRequest(branch=target, clear_expiry=no_expiry)
    if ttl is not None:
        req.ttl.FromSeconds(seconds(ttl, "--ttl"))
    if expires_at is not None:
        req.expires_at.FromDatetime(moment(expires_at, "--expires-at"))
    if protect or protect_for:
        req.protection = pb.PROTECTION_CHANGE_PROTECT
    if protect_for:
        req.protect_for.FromSeconds(seconds(protect_for, "--protect-for"))
    if unprotect:
        req.protection = pb.PROTECTION_CHANGE_UNPROTECT
    if suspend_after is not None and suspend_after.strip().lower() == "default":
        req.clear_suspend_after = True
    elif suspend_after is not None:
        req.suspend_after.seconds = idle_seconds(suspend_after)
    if not (req.HasField("ttl") or req.HasField("expires_at") or no_expiry or req.protection
            or suspend_after is not None):
        raise click.UsageError("nothing to change: give --ttl, --expires-at, --no-expiry, "
                               "--protect, --protect-for, --unprotect or --suspend-after")
    name = describe(target)
    with working(f"Updating branch {name}", f"Updated branch {name}"):
        b = state.client().update_branch(req)
    if state.json:
        output.emit_json(shapes.branch(b))
    else:
        output.show(views.branch_fields(b))
