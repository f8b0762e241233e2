"""The backup operations as the API offers them: request ids, locks, progress.

Backups and prunes (the repository's writers) run one at a time in this
daemon; reads (list, verify, restore, diff) run beside them, the repository's
own file locks keep them consistent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from cygnet import backup
from cygnet.agent import offsite
from cygnet.agent.backups import catalog
from cygnet.agent.backups import schedule as sched
from cygnet.agent.backups.create import backup_branch
from cygnet.agent.backups.diff import BranchDiff, diff_branches
from cygnet.agent.backups.progress import Progress, Reporter, stream
from cygnet.agent.backups.restore import Restored, into_branch, into_database
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, SnapshotRecord
from cygnet.agent.service import AgentService, BranchRef, BranchView
from cygnet.backup import BackupInfo, CorruptRepository, PruneReport, VerifyReport
from cygnet.backup.models import check_backup_id
from cygnet.errors import InvalidArgument

T = TypeVar("T")

VERIFY_LOCK_TIMEOUT = 600.0
PRUNE_LOCK_TIMEOUT = 600.0


@dataclass(frozen=True)
class AutoSnapshot:
    database: DatabaseRecord
    branch: BranchRecord
    snapshot: SnapshotRecord


@dataclass(frozen=True)
class RestoreResult:
    view: BranchView
    bytes_written: int
    duration_s: float


class BackupService:
    def __init__(self, agent: AgentService) -> None:
        self.agent = agent
        self.host = agent.host
        self.writer = asyncio.Lock()

    @property
    def repo(self) -> Path:
        return self.host.config.backup_repository

    def _stream(self, request_id: str, method: str, run: Callable[[Reporter], Awaitable[T]]
                ) -> AsyncIterator[Progress | T]:
        """Progress and result; a retry with the same request id gets the first result."""
        async def once(report: Reporter) -> T:
            return await self.agent.requests.run(request_id, method, lambda: run(report))

        return stream(once)

    async def _branch_id(self, ref: BranchRef) -> tuple[str, str]:
        db, branch = self.agent.resolve(await self.host.inventory(), ref)
        return db.id, branch.id

    def create(self, ref: BranchRef, request_id: str) -> AsyncIterator[Progress | BackupInfo]:
        async def run(report: Reporter) -> BackupInfo:
            _, branch_id = await self._branch_id(ref)
            await self.host.require_free_for(branch_id, "a backup")  # before CHECKPOINT
            async with self.writer:
                made = await backup_branch(self.host, self.repo, branch_id, report)
            offsite.poke()  # off-host now, not at the uploader's next look
            return made

        return self._stream(request_id, "CreateBackup", run)

    async def get_schedule(self, database: str) -> sched.View:
        db = await self.agent.get_database(database)
        return await sched.view(self.host, db)

    async def set_schedule(self, database: str, change: sched.Change, request_id: str
                           ) -> sched.View:
        async def call() -> sched.View:
            db = await self.agent.get_database(database)
            async with self.host.db_locks[db.id]:
                await sched.write(self.host, db, change)
            return await sched.view(self.host, db)

        return await self.agent.requests.run(request_id, "SetSchedule", call)

    async def auto_snapshots(self, database: str, branch: str) -> list[AutoSnapshot]:
        """The automatic snapshots ListBackups shows beside the backups, oldest first."""
        inv = await self.host.inventory()
        found = []
        for db in inv.databases.values():
            if database and database not in (db.id, db.name):
                continue
            for b in db.branches.values():
                if branch and branch not in (b.id, b.name):
                    continue
                found += [AutoSnapshot(db, b, s) for s in b.snapshots if s.kind == sched.AUTO]
        return sorted(found, key=lambda a: a.snapshot.created)

    async def list_backups(self, database: str, branch: str) -> list[BackupInfo]:
        infos = await asyncio.to_thread(catalog.list_backups, self.repo)
        found = [i for i in infos if catalog.matches(i, database, branch)]
        if not found:
            await self._check_known(infos, database, branch)
        return found

    async def _check_known(self, infos: list[BackupInfo], database: str, branch: str) -> None:
        """NotFound unless `database` (and `branch`) exist here or have backups: an
        empty answer must mean "no backups", never "no such database"."""
        if database and not any(catalog.matches(i, database, "") for i in infos):
            db = await self.agent.get_database(database)
            if branch:
                db.branch(branch)

    def verify(self) -> AsyncIterator[Progress | VerifyReport]:
        async def run(report: Reporter) -> VerifyReport:
            if not (self.repo / backup.repo.CONFIG_NAME).exists():
                return VerifyReport()
            packs = len(list((self.repo / "packs").glob("*.idx")))
            # Counted in packs (files_done/files_total) and bytes re-hashed.
            progress = report.counter("verify", 0, packs)
            return await asyncio.to_thread(backup.verify, self.repo,
                                           lock_timeout=VERIFY_LOCK_TIMEOUT, progress=progress)

        return stream(run)

    def restore(self, backup_id: str, branch_name: str, database_name: str, pool: str,
                request_id: str, remote: bool = False
                ) -> AsyncIterator[Progress | RestoreResult]:
        check_backup_id(backup_id)  # the request table also requires one of the two names

        async def run(report: Reporter) -> RestoreResult:
            started = time.monotonic()
            repo = self.repo
            if remote:  # fetched from the off-host repository into a local cache
                report.phase("fetch")
                repo = await offsite.required().fetch_backup(backup_id)
            info = await asyncio.to_thread(backup.get_backup, repo, backup_id)
            try:
                if branch_name:
                    done = await into_branch(self.host, repo, info, branch_name,
                                             request_id, report)
                else:
                    done = await into_database(self.host, repo, info, database_name, pool,
                                               request_id, report)
            except CorruptRepository as exc:
                raise CorruptRepository(f"backup {backup_id} is damaged; nothing was restored "
                                        f"({exc})", exc.problems) from exc
            done = replace(done, duration_s=time.monotonic() - started)
            return await self._restored(done)

        return self._stream(request_id, "RestoreBackup", run)

    async def _restored(self, done: Restored) -> RestoreResult:
        db, branch = (await self.host.inventory()).branch_by_id(done.branch_id)
        return RestoreResult(self.agent.view(db, branch), done.bytes_written, done.duration_s)

    async def prune(self, keep_last: int | None, database: str, ids: list[str],
                    request_id: str) -> PruneReport:
        catalog.check_ids(ids)

        async def call() -> PruneReport:
            async with self.writer:
                doomed = set(ids)
                infos = await asyncio.to_thread(catalog.list_backups, self.repo)
                await self._check_known(infos, database, "")
                if keep_last is not None:
                    doomed.update(catalog.retention(infos, keep_last, database))
                if not doomed and not (self.repo / backup.repo.CONFIG_NAME).exists():
                    return PruneReport([], 0, 0, 0, 0)
                return await asyncio.to_thread(backup.prune, self.repo, delete=sorted(doomed),
                                               lock_timeout=PRUNE_LOCK_TIMEOUT)

        return await self.agent.requests.run(request_id, "PruneBackups", call)

    def diff(self, ref: BranchRef, other: BranchRef | None) -> AsyncIterator[Progress | BranchDiff]:
        async def run(report: Reporter) -> BranchDiff:
            db_id, new_id = await self._branch_id(ref)
            old_id = ""
            if other is not None:
                other_db, old_id = await self._branch_id(other)
                if other_db != db_id:
                    raise InvalidArgument("other", "both branches must be of the same database")
            return await diff_branches(self.host, db_id, new_id, old_id, report)

        return stream(run)
