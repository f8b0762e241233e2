"""`cygnet snapshot`: named, immutable points on a branch (zfs snapshot)."""

from __future__ import annotations

import click

from cygnet.cli import complete, output, shapes, views
from cygnet.cli.progress import working
from cygnet.cli.refs import branch_ref, describe
from cygnet.cli.state import OrderedGroup, State, db_option, json_option, pass_state


@click.group(cls=OrderedGroup)
def snapshot() -> None:
    """Create, list and delete snapshots of a branch.

    A snapshot is an immutable point in a branch's history. Branch from it
    (`branch create --snapshot`) or reset the branch to it (`branch reset --to`).
    BRANCH is DB/BRANCH, BRANCH with --db DB, a branch id, or DB for main.
    """


@snapshot.command("create", epilog="""\b
Examples:
  cygnet snapshot create shop/main before-migration
  cygnet snapshot create shop before-migration   # DB alone means main""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@click.argument("name")
@db_option
@json_option
@pass_state
def create(state: State, ref: str, name: str, db: str | None) -> None:
    """Snapshot BRANCH now, as NAME (after a CHECKPOINT, so it is consistent)."""
    target = branch_ref(ref, db)
    label = f"{describe(target)}@{name}"
    with working(f"Snapshotting {label}", f"Created snapshot {label}"):
        snap = state.client().create_snapshot(target, name)
    if state.json:
        output.emit_json(shapes.snapshot(snap))
    else:
        output.show(views.snapshots_table([snap]))


@snapshot.command("list", epilog="""\b
Example:
  cygnet snapshot list shop/main --json""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@db_option
@json_option
@pass_state
def list_(state: State, ref: str, db: str | None) -> None:
    """List the snapshots of BRANCH, oldest first."""
    snaps = state.client().list_snapshots(branch_ref(ref, db))
    if state.json:
        output.emit_json([shapes.snapshot(s) for s in snaps])
    else:
        output.show(views.snapshots_table(snaps))


@snapshot.command("rm", epilog="""\b
Example:
  cygnet snapshot rm shop/main before-migration""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@click.argument("snap", metavar="SNAP")
@db_option
@json_option
@pass_state
def rm(state: State, ref: str, snap: str, db: str | None) -> None:
    """Delete snapshot SNAP (name or id) of BRANCH.

    Refused while branches were cloned from it (see DEPENDENT BRANCHES in
    `snapshot list`).
    """
    snapshot_id = state.client().delete_snapshot(branch_ref(ref, db), snap)
    if state.json:
        output.emit_json({"snapshot_id": snapshot_id})
    else:
        output.show(f"Deleted snapshot {snap} ({snapshot_id}).")
