"""The agent's operations, as the API offers them: locking, request ids, lookups.

The gRPC servicer only converts messages; everything it calls lives here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from cygnet.agent import branches as br
from cygnet.agent import databases as dbs
from cygnet.agent import layout as L
from cygnet.agent import reset, snapshots
from cygnet.agent.clusters import Connection
from cygnet.agent.host import Host
from cygnet.agent.idempotency import RequestLog
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, Inventory, SnapshotRecord
from cygnet.agent.supervisor import Supervisor
from cygnet.errors import InvalidArgument, NotFound

T = TypeVar("T")


@dataclass(frozen=True)
class BranchRef:
    branch_id: str = ""
    database: str = ""
    name: str = ""


@dataclass
class BranchView:
    record: BranchRecord
    database: DatabaseRecord
    state: str  # creating | starting | running | stopped | failed | resetting | deleting

    @property
    def parent(self) -> BranchRecord | None:
        return self.database.branches.get(self.record.parent_id)

    @property
    def origin_name(self) -> str:
        """The parent snapshot's name as users know it."""
        origin = self.record.origin
        parent = self.parent
        if not origin or parent is None:
            return ""
        snap = next((s for s in parent.snapshots if s.dataset == origin), None)
        if snap is not None and snap.kind == "user":
            return snap.name
        # A branch point: its id, which is the snapshot's name in ZFS.
        return snap.id if snap else origin.rsplit("@", 1)[-1]


class AgentService:
    def __init__(self, host: Host, supervisor: Supervisor) -> None:
        self.host = host
        self.supervisor = supervisor
        self.requests = RequestLog()
        self._db_ids: dict[str, str] = {}

    # --- lookups -------------------------------------------------------------

    def resolve(self, inv: Inventory, ref: BranchRef) -> tuple[DatabaseRecord, BranchRecord]:
        if ref.branch_id:
            return inv.branch_by_id(ref.branch_id)
        if not ref.database:
            raise InvalidArgument("branch", "give a branch_id, or a database and a branch name")
        db = inv.database(ref.database)
        return db, db.branch(ref.name)

    def view(self, db: DatabaseRecord, branch: BranchRecord) -> BranchView:
        return BranchView(branch, db, self.state_of(branch))

    async def fresh_view(self, branch_id: str) -> BranchView:
        """The branch as ZFS now sees it: space used, origin snapshot, children."""
        return self.view(*(await self.host.inventory()).branch_by_id(branch_id))

    def state_of(self, branch: BranchRecord) -> str:
        if branch.phase != L.PHASE_READY:
            return branch.phase
        if self.host.clusters.accepting(branch):
            return "running"
        if self.host.clusters.live(branch) is not None:
            return "starting"
        if branch.desired != "running":
            return "stopped"
        return "failed" if self.supervisor.is_failing(branch.id) else "starting"

    async def get_database(self, ref: str) -> DatabaseRecord:
        return (await self.host.inventory()).database(ref)

    async def list_databases(self) -> list[DatabaseRecord]:
        inv = await self.host.inventory()
        return sorted(inv.databases.values(), key=lambda d: d.created)

    async def get_branch(self, ref: BranchRef) -> BranchView:
        return self.view(*self.resolve(await self.host.inventory(), ref))

    async def list_branches(self, database: str) -> list[BranchView]:
        inv = await self.host.inventory()
        dbs_ = [inv.database(database)] if database else list(inv.databases.values())
        views = [self.view(db, b) for db in dbs_ for b in db.branches.values()]
        return sorted(views, key=lambda v: v.record.created)

    async def connection(self, ref: BranchRef) -> Connection:
        _, branch = self.resolve(await self.host.inventory(), ref)
        return self.host.clusters.connection(branch)

    async def list_snapshots(self, ref: BranchRef) -> list[SnapshotRecord]:
        _, branch = self.resolve(await self.host.inventory(), ref)
        return [s for s in branch.snapshots if s.kind == "user"]

    # --- mutations -----------------------------------------------------------

    async def create_database(self, name: str, version: str, size: str, pool: str,
                              request_id: str) -> tuple[DatabaseRecord, BranchView]:
        async def call() -> tuple[DatabaseRecord, BranchView]:
            found = dbs.find_by_request(await self.host.inventory(), request_id)
            if found is not None and found.main is not None:
                return found, self.view(found, found.main)
            _, main = await dbs.create_database(self.host, name, version, size, pool,
                                                 request_id)
            view = await self.fresh_view(main.id)
            return view.database, view

        return await self.requests.run(request_id, "CreateDatabase", call)

    async def delete_database(self, ref: str, request_id: str) -> tuple[DatabaseRecord, list[str]]:
        async def call() -> tuple[DatabaseRecord, list[str]]:
            return await dbs.delete_database(self.host, ref)

        return await self.requests.run(request_id, "DeleteDatabase", call)

    async def _database_id(self, database: str) -> str:
        """Resolves a database name or id. Ids never change hands, so hits are cached;
        the caller re-reads ZFS under the database's lock anyway."""
        if database in self._db_ids:
            return self._db_ids[database]
        db = (await self.host.inventory()).database(database)
        self._db_ids[database] = db.id
        return db.id

    async def _locked_db(self, database: str) -> tuple[DatabaseRecord, Inventory]:
        """Waits for the database's lock; the caller must release host.db_locks[db.id]."""
        db_id = await self._database_id(database)
        await self.host.db_locks[db_id].acquire()
        try:
            inv = await self.host.inventory()
            if db_id not in inv.databases or inv.databases[db_id].phase == L.PHASE_DELETING:
                self._db_ids.pop(database, None)
                raise NotFound(f"database {database!r} not found")
            return inv.databases[db_id], inv
        except BaseException:
            self.host.db_locks[db_id].release()
            raise

    async def create_branch(self, database: str, name: str, parent: str, snapshot: str,
                            request_id: str) -> BranchView:
        async def call() -> BranchView:
            db, inv = await self._locked_db(database)
            try:
                found = br.find_branch_by_request(inv, request_id)
                if found is not None:
                    return self.view(db, found)
                branch = await br.create_branch(self.host, inv, db, name, parent, snapshot,
                                                request_id)
                await self.host.refresh_space(branch)
                db.branches[branch.id] = branch
                return self.view(db, branch)
            finally:
                self.host.db_locks[db.id].release()

        return await self.requests.run(request_id, "CreateBranch", call)

    async def _with_branch(self, ref: BranchRef, request_id: str, method: str,
                           action: Callable[[DatabaseRecord, BranchRecord], Awaitable[T]]) -> T:
        """Runs `action` on the branch under its database's lock, once per request id."""
        async def call() -> T:
            database = ref.database
            if ref.branch_id or not database:
                database = self.resolve(await self.host.inventory(), ref)[0].id
            db, inv = await self._locked_db(database)
            try:
                _, branch = self.resolve(inv, ref)
                return await action(db, branch)
            finally:
                self.host.db_locks[db.id].release()

        return await self.requests.run(request_id, method, call)

    async def delete_branch(self, ref: BranchRef, cascade: bool, request_id: str) -> list[str]:
        async def action(db: DatabaseRecord, branch: BranchRecord) -> list[str]:
            return await br.delete_branch(self.host, db, branch.id, cascade)

        return await self._with_branch(ref, request_id, "DeleteBranch", action)

    async def reset_branch(self, ref: BranchRef, snapshot: str, request_id: str) -> BranchView:
        async def action(db: DatabaseRecord, branch: BranchRecord) -> BranchView:
            await reset.reset_branch(self.host, db, branch, snapshot)
            return await self.fresh_view(branch.id)

        return await self._with_branch(ref, request_id, "ResetBranch", action)

    async def set_running(self, ref: BranchRef, running: bool, request_id: str) -> BranchView:
        async def action(db: DatabaseRecord, branch: BranchRecord) -> BranchView:
            self.supervisor.forget(branch.id)
            await br.set_running(self.host, db, branch, running)
            return self.view(db, branch)

        method = "StartBranch" if running else "StopBranch"
        return await self._with_branch(ref, request_id, method, action)

    async def create_snapshot(self, ref: BranchRef, name: str, request_id: str
                              ) -> SnapshotRecord:
        async def action(db: DatabaseRecord, branch: BranchRecord) -> SnapshotRecord:
            return await snapshots.create_snapshot(self.host, branch, name, request_id)

        return await self._with_branch(ref, request_id, "CreateSnapshot", action)

    async def delete_snapshot(self, ref: BranchRef, snapshot: str, request_id: str
                              ) -> SnapshotRecord:
        async def action(db: DatabaseRecord, branch: BranchRecord) -> SnapshotRecord:
            names = {b.dataset: f"{db.name}/{b.name}" for b in db.branches.values()}
            return await snapshots.delete_snapshot(self.host, branch, snapshot, names)

        return await self._with_branch(ref, request_id, "DeleteSnapshot", action)
