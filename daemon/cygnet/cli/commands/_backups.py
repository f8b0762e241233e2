"""The Backups API for the CLI: calls with progress, JSON shapes and tables.

Streaming calls are not retried (a second stream would start the work over);
they have no deadline unless --timeout is given, since a backup's length
grows with the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from cygnet.api.v1 import backup_pb2 as bpb
from cygnet.api.v1 import backup_pb2_grpc
from cygnet.cli import output as o
from cygnet.cli.progress import interactive
from cygnet.cli.rpcerrors import from_rpc
from cygnet.cli.shapes import Json, iso
from cygnet.cli.state import State

QUERY_TIMEOUT = 30.0


def _connected(channel: grpc.Channel) -> bool:
    try:
        grpc.channel_ready_future(channel).result(timeout=1.0)
    except grpc.FutureTimeoutError:
        return False
    return True


def _fail(state: State, channel: grpc.Channel, exc: grpc.RpcError) -> Exception:
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        # A refused client certificate is UNAVAILABLE too: say which it was.
        refusal = state.target().refusal()
        if refusal is not None:
            return refusal
    return from_rpc(exc, state.target().address, _connected(channel))


def call(state: State, method: str, request: Any) -> Any:
    """A unary call of the Backups service, errors mapped to exit codes."""
    with state.target().channel() as channel:
        stub = backup_pb2_grpc.BackupsStub(channel)  # type: ignore[no-untyped-call]
        try:
            return getattr(stub, method)(request, timeout=state.timeout or QUERY_TIMEOUT)
        except grpc.RpcError as exc:
            raise _fail(state, channel, exc) from exc


def stream(state: State, method: str, request: Any, doing: str) -> Any:
    """A streaming call: progress on a terminal, then the result."""
    with state.target().channel() as channel, _bar(doing) as show:
        stub = backup_pb2_grpc.BackupsStub(channel)  # type: ignore[no-untyped-call]
        result = None
        try:
            for event in getattr(stub, method)(request, timeout=state.timeout):
                if event.HasField("progress"):
                    show(event.progress)
                else:
                    result = event.result
        except grpc.RpcError as exc:
            raise _fail(state, channel, exc) from exc
    return result


@contextmanager
def _bar(doing: str) -> Iterator[Any]:
    if not interactive():
        yield lambda _p: None
        return
    # rich only for a person watching: piped runs skip its import.
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=o.console(stderr=True), transient=True) as bar:
        task: TaskID = bar.add_task(f"{doing}…", total=None)

        def show(p: bpb.Progress) -> None:
            bar.update(task, description=f"{doing}: {p.phase}…",
                       total=p.bytes_total or None, completed=p.bytes_done)

        yield show


# --- JSON shapes (docs/cli.md) ---------------------------------------------------


def backup(b: bpb.Backup) -> Json:
    return {
        "id": b.id, "database_id": b.database_id, "database_name": b.database_name,
        "branch_id": b.branch_id, "branch_name": b.branch_name,
        "postgres_version": b.postgres_version, "size_class": b.size_class,
        "snapshot_at": iso(b.snapshot_at), "created_at": iso(b.created_at),
        "file_count": b.file_count, "logical_bytes": b.logical_bytes,
        "new_bytes": b.new_bytes, "new_blocks": b.new_blocks, "block_count": b.block_count,
        "duration_seconds": round(b.duration_seconds, 3), "trigger": b.trigger or "manual",
    }


def verify_report(r: bpb.VerifyReport) -> Json:
    return {
        "ok": r.ok, "packs_checked": r.packs_checked, "blocks_checked": r.blocks_checked,
        "bytes_checked": r.bytes_checked, "manifests_checked": r.manifests_checked,
        "unreferenced_blocks": r.unreferenced_blocks,
        "issues": [{"kind": i.kind, "path": i.path, "detail": i.detail} for i in r.issues],
        "garbage": list(r.garbage),
    }


def prune_report(r: bpb.PruneBackupsResponse) -> Json:
    return {"deleted_backup_ids": list(r.deleted_backup_ids), "packs_deleted": r.packs_deleted,
            "packs_rewritten": r.packs_rewritten, "blocks_removed": r.blocks_removed,
            "bytes_freed": r.bytes_freed}


def relation(r: bpb.RelationDiff) -> Json:
    return {
        "database": r.database or None, "schema": r.schema or None, "name": r.name or None,
        "kind": r.kind or None, "database_oid": r.database_oid, "relfilenode": r.relfilenode,
        "status": r.status, "changed_pages": r.changed_pages, "pages_before": r.pages_before,
        "pages_after": r.pages_after, "fsm_changed_pages": r.fsm_changed_pages,
        "vm_changed_pages": r.vm_changed_pages,
    }


def branch_diff(d: bpb.BranchDiff) -> Json:
    return {"old": d.old, "new": d.new, "changed_pages": d.changed_pages,
            "pages_compared": d.pages_compared,
            "relations": [relation(r) for r in d.relations],
            "other_files": dict(sorted(d.other_files.items()))}


# --- tables -------------------------------------------------------------------------


def backups_table(items: list[bpb.Backup]) -> Any:
    rows = [(b.id, f"{b.database_name}/{b.branch_name}", o.age(b.snapshot_at),
             o.size(b.logical_bytes), o.size(b.new_bytes), str(b.file_count))
            for b in items]
    return o.table(("ID", "BRANCH", "TAKEN", "SIZE", "NEW", "FILES"), rows)


def auto_snapshots_table(items: list[bpb.AutoSnapshot]) -> Any:
    rows = [(a.id, f"{a.database_name}/{a.branch_name}", o.age(a.created_at), o.size(a.used_bytes))
            for a in items]
    return o.table(("SNAPSHOT", "BRANCH", "TAKEN", "USED"), rows, title="Automatic snapshots")


def show_remote(state: State, database: str, branch: str) -> None:
    """`cygnet backup list --remote`: every host's backups in the off-host repository."""
    req = bpb.ListBackupsRequest(database=database, branch=branch, remote=True)
    items = list(call(state, "ListBackups", req).backups)
    if state.json:
        o.emit_json([backup(b) | {"host": b.host} for b in items])
        return
    rows = [(b.host, b.id, f"{b.database_name}/{b.branch_name}", o.age(b.snapshot_at),
             o.size(b.logical_bytes)) for b in items]
    o.show(o.table(("HOST", "ID", "BRANCH", "TAKEN", "SIZE"), rows))


def backup_fields(b: bpb.Backup) -> Any:
    return o.fields([
        ("Backup", b.id), ("Branch", f"{b.database_name}/{b.branch_name} ({b.branch_id})"),
        ("Postgres", b.postgres_version), ("Size class", b.size_class),
        ("Snapshot", o.timestamp(b.snapshot_at)), ("Files", str(b.file_count)),
        ("Size", o.size(b.logical_bytes)), ("Stored", f"{o.size(b.new_bytes)} new"),
        ("Took", f"{b.duration_seconds:.1f}s"),
    ])


def diff_table(d: bpb.BranchDiff) -> Any:
    def label(r: bpb.RelationDiff) -> str:
        if not r.name:
            return f"relfilenode {r.relfilenode} (db oid {r.database_oid})"
        where = f"{r.database}: " if r.database and r.database != "postgres" else ""
        return f"{where}{r.schema}.{r.name}"

    rows = [(label(r), r.kind or "?", r.status, str(r.changed_pages),
             f"{r.pages_before} → {r.pages_after}") for r in d.relations]
    title = f"{d.new} against {d.old}: {d.changed_pages} changed pages"
    return o.table(("RELATION", "KIND", "STATUS", "CHANGED PAGES", "PAGES"), rows, title=title)
