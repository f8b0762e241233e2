"""Backup records to protobuf messages."""

from __future__ import annotations

from cygnet.agent.backups.diff import BranchDiff, RelationRow
from cygnet.agent.backups.progress import Progress
from cygnet.api.v1 import backup_pb2 as pb
from cygnet.backup import BackupInfo, PruneReport, VerifyReport
from cygnet.rpc import convert


def progress(p: Progress) -> pb.Progress:
    return pb.Progress(phase=p.phase, bytes_done=p.bytes_done, bytes_total=p.bytes_total,
                       files_done=p.files_done, files_total=p.files_total)


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def backup(info: BackupInfo) -> pb.Backup:
    meta = info.metadata
    return pb.Backup(
        id=info.backup_id, created_at=convert.timestamp(info.created_at.timestamp()),
        database_id=str(meta.get("database_id", "")), database_name=str(meta.get("database", "")),
        branch_id=str(meta.get("branch_id", "")), branch_name=str(meta.get("branch", "")),
        postgres_version=str(meta.get("postgres_version", "")),
        size_class=str(meta.get("size_class", "")),
        snapshot_at=convert.timestamp(_num(meta.get("snapshot_at"))),
        file_count=info.file_count, logical_bytes=info.logical_bytes, new_bytes=info.new_bytes,
        new_blocks=info.new_blocks, block_count=info.block_count,
        duration_seconds=info.duration_s,
    )


def verify_report(r: VerifyReport) -> pb.VerifyReport:
    return pb.VerifyReport(
        ok=r.ok, packs_checked=r.packs_checked, blocks_checked=r.blocks_checked,
        bytes_checked=r.bytes_checked, manifests_checked=r.manifests_checked,
        unreferenced_blocks=r.unreferenced_blocks, garbage=r.garbage,
        issues=[pb.VerifyIssue(kind=i.kind, path=i.path, detail=i.detail) for i in r.issues])


def prune_report(r: PruneReport) -> pb.PruneBackupsResponse:
    return pb.PruneBackupsResponse(
        deleted_backup_ids=r.deleted_backups, packs_deleted=r.packs_deleted,
        packs_rewritten=r.packs_rewritten, blocks_removed=r.blocks_removed,
        bytes_freed=max(0, r.bytes_freed))


def _relation(row: RelationRow) -> pb.RelationDiff:
    c, n = row.change, row.name
    return pb.RelationDiff(
        database=n.database if n else "", schema=n.schema if n else "",
        name=n.name if n else "", kind=n.kind if n else "", database_oid=c.db_oid,
        relfilenode=c.relfilenode, status=c.status, changed_pages=c.main_changed_pages,
        pages_before=c.main_pages_before, pages_after=c.main_pages_after,
        fsm_changed_pages=c.fsm_changed_pages, vm_changed_pages=c.vm_changed_pages)


def branch_diff(d: BranchDiff) -> pb.BranchDiff:
    return pb.BranchDiff(old=d.old, new=d.new, relations=[_relation(r) for r in d.relations],
                         other_files=d.other_files, pages_compared=d.pages_compared,
                         changed_pages=d.changed_pages)
