"""`cygnet backup`: block-level, deduplicated backups of branches in the host's repository."""

from __future__ import annotations

import click
from rich.text import Text

from cygnet.api.v1 import backup_pb2 as bpb
from cygnet.cli import complete, output, shapes, views
from cygnet.cli.commands import _backups as api
from cygnet.cli.confirm import confirm, destructive_options
from cygnet.cli.doomed import backups as doomed_backups
from cygnet.cli.errors import CliError, Exit
from cygnet.cli.refs import branch_ref, describe
from cygnet.cli.state import OrderedGroup, State, db_option, json_option, pass_state


@click.group(cls=OrderedGroup)
def backup() -> None:
    """Back up branches, list, verify, restore and prune backups.

    Each backup reads a fresh snapshot of the branch and stores only the 8 KiB
    blocks the repository (cygnetd's backup_dir) does not hold yet, so every
    backup is incremental to write and complete to restore.
    """


@backup.command("create", epilog="""\b
Examples:
  cygnet backup create shop               # main
  cygnet backup create shop/feature --json""")
@click.argument("ref", metavar="BRANCH", shell_complete=complete.branches)
@db_option
@json_option
@pass_state
def create(state: State, ref: str, db: str | None) -> None:
    """Back up BRANCH (a CHECKPOINT first if it runs; it keeps running)."""
    target = branch_ref(ref, db)
    req = bpb.CreateBackupRequest(branch=target)
    made = api.stream(state, "CreateBackup", req, f"Backing up {describe(target)}")
    if state.json:
        output.emit_json(api.backup(made))
    else:
        output.show(api.backup_fields(made))


@backup.command("list", epilog="""\b
Examples:
  cygnet backup list
  cygnet backup list shop --branch feature --json
  cygnet backup list --remote        # the off-host repository, every host's""")
@click.argument("database", metavar="[DB]", required=False, default="",
                shell_complete=complete.databases)
@click.option("--branch", metavar="BRANCH", default="", help="Only backups of this branch.")
@click.option("--remote", is_flag=True,
              help="List the off-host repository (every host's backups) instead of this host's.")
@json_option
@pass_state
def list_(state: State, database: str, branch: str, remote: bool) -> None:
    """List backups (of DB, or of every database), oldest first."""
    if branch and not database:
        raise CliError("branch: --branch needs DB", Exit.INVALID)
    if remote:
        api.show_remote(state, database, branch)
        return
    req = bpb.ListBackupsRequest(database=database, branch=branch)
    listing = api.call(state, "ListBackups", req)
    items = list(listing.backups)
    if state.json:
        output.emit_json([api.backup(b) for b in items])
    elif listing.snapshots:  # the schedule's recovery points (cygnet db schedule)
        output.show(api.backups_table(items), "", api.auto_snapshots_table(list(listing.snapshots)))
    else:
        output.show(api.backups_table(items))


@backup.command("verify", epilog="""\b
Exit code 1 when anything stored is damaged; the report is printed anyway.""")
@json_option
@pass_state
def verify(state: State) -> None:
    """Re-hash every stored block and check every manifest of the repository."""
    report = api.stream(state, "VerifyBackups", bpb.VerifyBackupsRequest(), "Verifying")
    if state.json:
        output.emit_json(api.verify_report(report))
    else:
        rows = [(i.kind, i.path, i.detail) for i in report.issues]
        summary = (f"{report.manifests_checked} backups, {report.packs_checked} packs, "
                   f"{report.blocks_checked} blocks ({output.size(report.bytes_checked)}) checked")
        output.show(Text(("OK: " if report.ok else "DAMAGED: ") + summary,
                         style="green" if report.ok else "bold red"),
                    *([output.table(("KIND", "FILE", "PROBLEM"), rows)] if rows else []))
    if not report.ok:
        click.get_current_context().exit(Exit.ERROR)


@backup.command("restore", epilog="""\b
Examples:
  cygnet backup restore 20260131T091502417000Z-1a2b3c4d --branch yesterday
  cygnet backup restore 20260131T091502417000Z-1a2b3c4d --db shop-copy --json
  cygnet backup restore 20260131T091502417000Z-1a2b3c4d --db shop --remote""")
@click.argument("backup_id", metavar="BACKUP_ID")
@click.option("--branch", "branch_name", metavar="NAME", default="",
              help="Restore as a new branch NAME of the backup's database.")
@click.option("--db", "database_name", metavar="NAME", default="",
              help="Restore as the main branch of a new database NAME.")
@click.option("--pool", metavar="POOL", default="", help="Pool of the new database.")
@click.option("--remote", is_flag=True, help="Fetch the backup from the off-host repository "
              "first (any host's; see `cygnet backup list --remote`).")
@json_option
@pass_state
def restore(state: State, backup_id: str, branch_name: str, database_name: str,
            pool: str, remote: bool) -> None:
    """Restore a backup into a new branch or a new database, and start it.

    A damaged backup is refused and nothing is left behind.
    """
    if bool(branch_name) == bool(database_name):
        raise CliError("target: give exactly one of --branch NAME and --db NAME", Exit.INVALID)
    req = bpb.RestoreBackupRequest(backup_id=backup_id, branch_name=branch_name,
                                   database_name=database_name, pool=pool, remote=remote)
    done = api.stream(state, "RestoreBackup", req, f"Restoring {backup_id}")
    if state.json:
        output.emit_json({"database": shapes.database(done.database),
                          "branch": shapes.branch(done.branch),
                          "connection": shapes.connection(done.connection),
                          "bytes_written": done.bytes_written,
                          "duration_seconds": round(done.duration_seconds, 3)})
        return
    output.show(views.branch_fields(done.branch), Text(""),
                views.connection_fields(done.connection))


@backup.command("prune", epilog="""\b
Examples:
  cygnet backup prune --keep-last 7 --dry-run    # what would be deleted
  cygnet backup prune --keep-last 7              # per branch, every database (asks first)
  cygnet backup prune --keep-last 3 --db shop --yes
  cygnet backup prune 20260131T091502417000Z-1a2b3c4d""")
@click.argument("backup_ids", metavar="[BACKUP_ID]...", nargs=-1)
@click.option("--keep-last", type=click.IntRange(min=0), metavar="N",
              help="Keep the newest N backups of each branch, delete older ones.")
@click.option("--db", "database", metavar="DB", default="",
              help="Apply --keep-last to this database's backups only.")
@destructive_options
@json_option
@pass_state
def prune(state: State, backup_ids: tuple[str, ...], keep_last: int | None,
          database: str, yes: bool, dry_run: bool) -> None:
    """Delete backups, then every stored block no remaining backup uses."""
    if keep_last is None and not backup_ids:
        raise CliError("prune: give --keep-last N and/or BACKUP_IDs", Exit.INVALID)

    def listed() -> list[str]:
        found = list(api.call(state, "ListBackups", bpb.ListBackupsRequest()).backups)
        return doomed_backups(found, keep_last, database, list(backup_ids))

    if not confirm("prune backups", listed, yes=yes, dry_run=dry_run, json_output=state.json):
        return
    req = bpb.PruneBackupsRequest(database=database, backup_ids=list(backup_ids))
    if keep_last is not None:
        req.keep_last = keep_last
    report = api.call(state, "PruneBackups", req)
    if state.json:
        output.emit_json(api.prune_report(report))
        return
    n = len(report.deleted_backup_ids)
    output.show(f"Deleted {n} backup{'s' if n != 1 else ''}, freed "
                f"{output.size(report.bytes_freed)} ({report.blocks_removed} blocks).")
