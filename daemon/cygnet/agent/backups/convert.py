"""Backup records to protobuf messages."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from cygnet.agent.backups import schedule as sched
from cygnet.agent.backups.diff import BranchDiff, RelationRow
from cygnet.agent.backups.progress import Progress
from cygnet.agent.backups.service import AutoSnapshot
from cygnet.api.v1 import backup_pb2 as pb
from cygnet.backup import BackupInfo, PruneReport, VerifyReport
from cygnet.backup.retention import Policy
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
        duration_seconds=info.duration_s, trigger=str(meta.get("trigger", "")),
    )


def _ts(seconds: float) -> Timestamp | None:
    return convert.timestamp(seconds) if seconds else None


def auto_snapshot(a: AutoSnapshot) -> pb.AutoSnapshot:
    return pb.AutoSnapshot(
        id=a.snapshot.id, database_id=a.database.id, database_name=a.database.name,
        branch_id=a.branch.id, branch_name=a.branch.name,
        created_at=convert.timestamp(a.snapshot.created), used_bytes=a.snapshot.used_bytes)


def retention(p: Policy) -> pb.Retention:
    return pb.Retention(keep_last=p.keep_last, keep_hourly=p.keep_hourly,
                        keep_daily=p.keep_daily, keep_weekly=p.keep_weekly,
                        keep_monthly=p.keep_monthly, keep_within_seconds=p.keep_within_s)


def policy(r: pb.Retention) -> Policy:
    return Policy(r.keep_last, r.keep_hourly, r.keep_daily, r.keep_weekly, r.keep_monthly,
                  r.keep_within_seconds)


def schedule(v: sched.View) -> pb.Schedule:
    s = v.schedule
    return pb.Schedule(
        database_id=v.database.id, database_name=v.database.name,
        snapshot_every_seconds=s.snapshot_every, backup_cron=s.backup_cron,
        retention=retention(s.retention), host_defaults=list(s.host_defaults),
        last_snapshot_at=_ts(v.last_snapshot), last_backup_at=_ts(s.last_backup),
        next_backup_at=_ts(v.next_backup), oldest_retained_at=_ts(s.retained_since),
        last_error=s.last_error)


def schedule_change(req: pb.SetScheduleRequest) -> sched.Change:
    return sched.Change(
        snapshot_every=(req.snapshot_every_seconds if req.HasField("snapshot_every_seconds")
                        else None),
        backup_cron=req.backup_cron if req.HasField("backup_cron") else None,
        retention=policy(req.retention) if req.HasField("retention") else None,
        use_defaults=req.use_defaults)


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
