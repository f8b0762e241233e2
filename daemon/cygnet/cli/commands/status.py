"""`cygnet status`: one screen on the host, its pools, databases, branches and alerts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click
from rich.console import RenderableType
from rich.text import Text

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.cli import output as o
from cygnet.cli import shapes
from cygnet.cli.state import State, json_option, pass_state
from cygnet.states import BranchState

# A pool this full gets an alert: ZFS slows down past ~80-90%, and a full pool refuses writes.
NEARLY_FULL = 0.90
BROKEN = {BranchState.FAILED, BranchState.UNAVAILABLE}
# One screen: at most this many branch rows; the rest are counted.
MAX_ROWS = 15


@dataclass(frozen=True)
class Alert:
    subject: str
    message: str

    def shape(self) -> dict[str, str]:
        return {"subject": self.subject, "message": self.message}


def alerts(h: pb.HostStatus, branches: list[pb.Branch]) -> list[Alert]:
    found: list[Alert] = []
    for p in h.pools:
        if p.health.upper() != "ONLINE":
            found.append(Alert(f"pool {p.name}", f"health is {p.health}"))
        if p.size_bytes and p.used_bytes / p.size_bytes >= NEARLY_FULL:
            found.append(Alert(f"pool {p.name}", f"{p.used_bytes / p.size_bytes:.0%} full, "
                                                 f"{o.size(p.free_bytes)} free"))
        if p.reserve_bytes == 0:
            found.append(Alert(f"pool {p.name}", "space reserve spent: deletes and stops on a "
                                                 "full pool may fail; free some space"))
    for b in branches:
        name, state = f"{b.database_name}/{b.name}", shapes.state_name(b.state)
        if state in BROKEN:
            why = b.state_message or "no reason given"
            found.append(Alert(f"branch {name}", f"{state}: {why}"))
        elif b.desired_running and state == BranchState.STOPPED:
            found.append(Alert(f"branch {name}", "should run but is stopped"))
    return found


def _branch_rows(branches: list[pb.Branch]) -> Any:
    rows: list[tuple[RenderableType, ...]] = [
        (f"{b.database_name}/{b.name}", o.state(shapes.state_name(b.state)),
         str(b.port or "-"), o.size(b.used_bytes), b.state_message or "")
        for b in branches[:MAX_ROWS]]
    if len(branches) > MAX_ROWS:
        rows.append((f"… and {len(branches) - MAX_ROWS} more", "", "", "", ""))
    return o.table(("BRANCH", "STATE", "PORT", "USED", "WHY"), rows)


def _view(h: pb.HostStatus, dbs: list[pb.Database], branches: list[pb.Branch],
          found: list[Alert]) -> list[RenderableType]:
    states = [shapes.state_name(b.state) for b in branches]
    counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(sorted(states)))
    head = o.fields([
        ("Host", f"{h.hostname} ({h.host_id})" if h.host_id != h.hostname else h.hostname),
        ("cygnetd", f"{h.version}, ZFS {h.zfs_dialect}, Postgres "
                    f"{', '.join(h.postgres_versions) or '-'}"),
        ("Databases", str(len(dbs))), ("Branches", f"{len(branches)} ({counts or 'none'})"),
    ])
    pools = o.table(("POOL", "HEALTH", "SIZE", "USED", "FREE", "RESERVE"),
                    [(p.name, p.health, o.size(p.size_bytes), o.size(p.used_bytes),
                      o.size(p.free_bytes), o.size(p.reserve_bytes)) for p in h.pools])
    shown = [b for b in branches if shapes.state_name(b.state) != BranchState.STOPPED]
    parts: list[RenderableType] = [head, Text(""), pools]
    if shown:
        parts += [Text("Running and failing branches", style="bold"), _branch_rows(shown)]
    if found:
        parts.append(Text("Alerts", style="bold red"))
        parts += [Text.assemble(("  ! ", "bold red"), (a.subject, "bold"), f": {a.message}")
                  for a in found]
    else:
        parts.append(Text("No alerts.", style="green"))
    return parts


@click.command(epilog="""\b
Examples:
  cygnet status
  cygnet status --json | jq '.alerts'""")
@json_option
@pass_state
def status(state: State) -> None:
    """One screen: the host, its pools, databases, running and failed branches, alerts.

    Alerts: a pool not ONLINE or 90% full, a pool whose space reserve is spent,
    a failed or unavailable branch, a branch that should run but is stopped.
    """
    client = state.client()
    h = client.host_status()
    dbs = client.list_databases()
    branches = client.list_branches()
    found = alerts(h, branches)
    if state.json:
        o.emit_json({
            "host": shapes.host(h), "database_count": len(dbs),
            "branch_counts": {s: sum(1 for b in branches if shapes.state_name(b.state) == s)
                              for s in sorted({shapes.state_name(b.state) for b in branches})},
            "branches": [shapes.branch(b) for b in branches
                         if shapes.state_name(b.state) != BranchState.STOPPED],
            "alerts": [a.shape() for a in found],
        })
        return
    o.show(*_view(h, dbs, branches, found))
