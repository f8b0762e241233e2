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
from cygnet.agent import pgsettings, promote, reset, snapshots
from cygnet.agent.clusters import Connection
from cygnet.agent.events import EventKind, emit
from cygnet.agent.host import Host
from cygnet.agent.idempotency import RequestLog
from cygnet.agent.idle import timeout_of
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, Inventory, SnapshotRecord
from cygnet.agent.liveness import LiveView
from cygnet.agent.protection import guard
from cygnet.agent.scale import Scaler
from cygnet.agent.supervisor import Supervisor
from cygnet.errors import FailedPrecondition, InvalidArgument, NotFound
from cygnet.names import shown
from cygnet.states import BranchState, Desired, state_of_phase

T = TypeVar("T")
# Branch calls that never read a branch's files: a parked branch stays unmounted.
_NO_FILES = frozenset({"DeleteBranch", "SuspendBranch"})


@dataclass(frozen=True)
class BranchRef:
    branch_id: str = ""
    database: str = ""
    name: str = ""
    field: str = "branch"  # the request field it came from, for error messages


def check_agrees(ref: BranchRef, db: DatabaseRecord, branch: BranchRecord) -> None:
    """A ref with a branch_id and also a database or name must say the same thing:
    the id never silently wins over a name that disagrees."""
    if ref.database and ref.database not in (db.id, db.name):
        raise InvalidArgument(f"{ref.field}.database", f"branch_id {ref.branch_id} is a "
                              f"branch of database {db.name!r}, not of {shown(ref.database)}")
    if ref.name and ref.name not in (branch.id, branch.name):
        raise InvalidArgument(f"{ref.field}.name", f"branch_id {ref.branch_id} is branch "
                              f"{db.name}/{branch.name}, not {shown(ref.name)}")


@dataclass
class BranchView:
    record: BranchRecord
    database: DatabaseRecord
    state: BranchState
    message: str = ""  # why: failed or unavailable (no data mounted)
    suspend_after: float = 0.0  # seconds idle before a suspend: its own or the host's; 0 never

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
        snap = parent.snapshot_at(origin)
        if snap is not None and snap.kind == "user":
            return snap.name
        # A branch point: its id, which is the snapshot's name in ZFS.
        return snap.id if snap else origin.rsplit("@", 1)[-1]


class AgentService:
    def __init__(self, host: Host, supervisor: Supervisor) -> None:
        self.host = host
        self.supervisor = supervisor
        self.scaler = Scaler(host, supervisor)  # suspend, resume, wake (agent/scale.py)
        self.requests = RequestLog()

    # --- lookups -------------------------------------------------------------
    # Names are resolved through the host's cache of databases; what is
    # returned is always read from ZFS for that one database.

    async def database_id(self, ref: BranchRef | str) -> str:
        """The id of the database a branch ref or database name/id points at."""
        if isinstance(ref, BranchRef) and ref.branch_id:
            found = self.host.find_branch(ref.branch_id)
            if found is None:
                await self.host.catalog()
                found = self.host.find_branch(ref.branch_id)
            if found is None:
                raise NotFound(f"branch {shown(ref.branch_id)} not found")
            return found.id
        name = ref if isinstance(ref, str) else ref.database
        if not name:
            if isinstance(ref, BranchRef):
                raise InvalidArgument(
                    ref.field, "give a branch_id, or a database and a branch name")
            raise InvalidArgument("database", "must not be empty")
        db = self.host.find_database(name)
        if db is None:
            await self.host.catalog()
            db = self.host.find_database(name)
        if db is None:
            raise NotFound(f"database {shown(name)} not found")
        return db.id

    async def read_database(self, database_id: str, *, snapshots: bool = True,
                            shared: bool = False) -> tuple[DatabaseRecord, Inventory]:
        """`shared`: for a caller that changes none of the records (Host.shared_inventory)."""
        inv = await (self.host.shared_inventory(database_id) if shared else
                     self.host.database_inventory(database_id, snapshots=snapshots))
        db = inv.databases.get(database_id)
        if db is None or db.phase == L.PHASE_DELETING:
            raise NotFound(f"database {shown(database_id)} not found")
        return db, inv

    def resolve(self, inv: Inventory, ref: BranchRef) -> tuple[DatabaseRecord, BranchRecord]:
        if ref.branch_id:
            db, branch = inv.branch_by_id(ref.branch_id)
            check_agrees(ref, db, branch)
            return db, branch
        db = inv.database(ref.database)
        return db, db.branch(ref.name)

    async def read_branch(self, ref: BranchRef, *, shared: bool = False
                          ) -> tuple[DatabaseRecord, BranchRecord]:
        _, inv = await self.read_database(await self.database_id(ref), shared=shared)
        return self.resolve(inv, ref)

    def view(self, db: DatabaseRecord, branch: BranchRecord, live: LiveView | None = None
             ) -> BranchView:
        state = self.state_of(branch, live)
        failing = state in (BranchState.FAILED, BranchState.UNAVAILABLE)
        message = self.supervisor.reason(branch.id) if failing else ""
        if state == BranchState.SUSPENDED and self.scaler.failure(branch.id):
            message = f"its last wake failed: {self.scaler.failure(branch.id)}"
        return BranchView(branch, db, state, message,
                          timeout_of(branch, self.host.config.suspend_after))

    def state_of(self, branch: BranchRecord, live: LiveView | None = None) -> BranchState:
        """`live`, when given, answers for the postmasters (a view of many branches)."""
        if branch.phase != L.PHASE_READY:
            return state_of_phase(branch.phase)
        if self.scaler.is_suspending(branch.id):
            return BranchState.SUSPENDING
        if live.accepting(branch) if live else self.host.clusters.accepting(branch):
            return BranchState.RUNNING
        if live.live(branch) if live else self.host.clusters.live(branch) is not None:
            return BranchState.STARTING
        if branch.desired == Desired.SUSPENDED:
            return BranchState.SUSPENDED
        if branch.desired != Desired.RUNNING:
            return BranchState.STOPPED
        if self.supervisor.is_unavailable(branch.id):
            return BranchState.UNAVAILABLE
        if self.supervisor.is_failing(branch.id):
            return BranchState.FAILED
        return BranchState.STARTING

    async def get_database(self, ref: str) -> DatabaseRecord:
        return (await self.read_database(await self.database_id(ref)))[0]

    async def list_databases(self) -> list[DatabaseRecord]:
        inv = await self.host.catalog()
        return sorted(inv.databases.values(), key=lambda d: d.created)

    async def get_branch(self, ref: BranchRef) -> BranchView:
        return self.view(*await self.read_branch(ref, shared=True))

    async def list_branches(self, database: str) -> list[BranchView]:
        if database:
            databases = [(await self.read_database(await self.database_id(database),
                                                   shared=True))[0]]
        else:
            databases = list((await self.host.inventory()).databases.values())
        live = LiveView(self.host.clusters)
        views = [self.view(db, b, live) for db in databases for b in db.branches.values()]
        return sorted(views, key=lambda v: v.record.created)

    async def connection(self, ref: BranchRef) -> Connection:
        _, branch = await self.read_branch(ref)
        return self.host.clusters.connection(branch)

    async def list_snapshots(self, ref: BranchRef
                             ) -> tuple[DatabaseRecord, list[SnapshotRecord]]:
        db, branch = await self.read_branch(ref)
        return db, [s for s in branch.snapshots if s.kind == "user"]

    # --- mutations -----------------------------------------------------------

    async def create_database(self, name: str, version: str, size: str, pool: str,
                              request_id: str, *, quota: int = 0,
                              settings: dict[str, str] | None = None
                              ) -> tuple[DatabaseRecord, BranchView]:
        async def call() -> tuple[DatabaseRecord, BranchView]:
            db, main = await dbs.create_database(self.host, name, version, size, pool,
                                                 request_id, quota=quota, settings=settings)
            await self.host.refresh_space(main)
            return db, self.view(db, main)

        return await self.requests.run(request_id, "CreateDatabase", call)

    async def delete_database(self, ref: str, request_id: str, override_protection: bool = False
                              ) -> tuple[DatabaseRecord, list[str]]:
        async def call() -> tuple[DatabaseRecord, list[str]]:
            return await dbs.delete_database(self.host, ref, override_protection)

        return await self.requests.run(request_id, "DeleteDatabase", call)

    async def _locked_db(self, ref: BranchRef | str, *, snapshots: bool = True
                         ) -> tuple[DatabaseRecord, Inventory]:
        """Waits for the database's lock; the caller must release host.db_locks[db.id]."""
        db_id = await self.database_id(ref)
        await self.host.db_locks[db_id].acquire()
        try:
            return await self.read_database(db_id, snapshots=snapshots)
        except BaseException:
            self.host.db_locks[db_id].release()
            raise

    async def create_branch(self, database: str, name: str, parent: str, snapshot: str,
                            request_id: str, upgrade_to: str = "", suspend_after: int = -1,
                            expires_at: float = 0.0) -> BranchView:
        async def call() -> BranchView:
            # Snapshots are read only when branching from a named one.
            db, inv = await self._locked_db(database, snapshots=bool(snapshot))
            try:
                found = br.find_branch_by_request(inv, request_id)
                if found is not None:
                    return self.view(db, found)
                branch = await br.create_branch(self.host, inv, db, name, parent, snapshot,
                                                request_id, upgrade_to=upgrade_to,
                                                suspend_after=suspend_after,
                                                expires_at=expires_at)
                db.branches[branch.id] = branch
                return self.view(db, branch)
            finally:
                self.host.db_locks[db.id].release()

        return await self.requests.run(request_id, "CreateBranch", call)

    async def _with_branch(self, ref: BranchRef, request_id: str, method: str,
                           action: Callable[[DatabaseRecord, BranchRecord], Awaitable[T]]) -> T:
        """Runs `action` on the branch under its database's lock, once per request id."""
        async def call() -> T:
            db, inv = await self._locked_db(ref)
            try:
                _, branch = self.resolve(inv, ref)
                if method not in _NO_FILES:
                    await self.host.mount_branch(branch)  # parked: its files are needed
                return await action(db, branch)
            finally:
                self.host.db_locks[db.id].release()

        return await self.requests.run(request_id, method, call)

    async def delete_branch(self, ref: BranchRef, cascade: bool, request_id: str,
                            override_protection: bool = False) -> list[str]:
        async def action(db: DatabaseRecord, branch: BranchRecord) -> list[str]:
            doomed = [*db.descendants(branch.id), branch] if cascade else [branch]
            guard(doomed, "deleting it", override_protection, db.name)
            return await br.delete_branch(self.host, db, branch.id, cascade)

        return await self._with_branch(ref, request_id, "DeleteBranch", action)

    async def reset_branch(self, ref: BranchRef, snapshot: str, request_id: str,
                           override_protection: bool = False) -> BranchView:
        async def action(db: DatabaseRecord, branch: BranchRecord) -> BranchView:
            guard([branch], "resetting it", override_protection, db.name)
            if not snapshot and db.version_of(branch) != db.version:
                # The parent's state is another major: it would need a new upgrade.
                raise FailedPrecondition(
                    f"branch {branch.name!r} runs PostgreSQL {db.version_of(branch)} and its "
                    f"parent {db.version}: reset it to one of its own snapshots, or delete it "
                    "and create it again with upgrade_to (--upgrade-to)")
            if not branch.port:  # suspended: a reset starts the new data, so it needs a port
                await self.scaler.start_locked(db, branch, "reset")
            await reset.reset_branch(self.host, db, branch, snapshot)
            emit(EventKind.RESTORED, database_id=db.id, branch_id=branch.id, database=db.name,
                 branch=branch.name, reason=f"reset to {snapshot or 'its parent'}")
            await self.host.refresh_space(branch)
            return self.view(db, branch)

        return await self._with_branch(ref, request_id, "ResetBranch", action)

    async def promote_branch(self, ref: BranchRef, drop_old_main: bool, request_id: str
                             ) -> tuple[BranchView, BranchView | None, float]:
        """The branch's data becomes main's (agent/promote.py): main, the old main
        kept as a branch (None if dropped), and main's downtime in seconds."""
        async def action(db: DatabaseRecord, branch: BranchRecord
                         ) -> tuple[BranchView, BranchView | None, float]:
            for b in (db.main, branch):
                if b is not None and not b.port:  # suspended: the swap needs ports
                    await self.scaler.start_locked(db, b, "promote")
            done = await promote.promote_branch(self.host, db, branch, drop_old_main)
            fresh, _ = await self.read_database(db.id)
            old = fresh.branches.get(done.old_main.id) if done.old_main else None
            return (self.view(fresh, fresh.branches[done.main.id]),
                    self.view(fresh, old) if old else None, done.seconds_down)

        return await self._with_branch(ref, request_id, "PromoteBranch", action)

    async def set_running(self, ref: BranchRef, running: bool, request_id: str) -> BranchView:
        async def action(db: DatabaseRecord, branch: BranchRecord) -> BranchView:
            self.supervisor.forget(branch.id)
            if running:
                await self.supervisor.require_data(branch)  # mounts it, or says why not
            if running and not branch.port:  # suspended: it needs a port first
                await self.scaler.start_locked(db, branch, "started by an operator")
            await br.set_running(self.host, db, branch, running)
            return self.view(db, branch)

        method = "StartBranch" if running else "StopBranch"
        return await self._with_branch(ref, request_id, method, action)

    # --- scale to zero (agent/scale.py) ------------------------------------------

    async def wake(self, branch_id: str) -> int:
        """The port of a running branch, starting it once for all concurrent callers."""
        return await self.scaler.wake(branch_id)

    async def suspend_branch(self, ref: BranchRef, request_id: str) -> BranchView:
        async def action(db: DatabaseRecord, branch: BranchRecord) -> BranchView:
            await self.scaler.suspend_locked(db, branch)
            return self.view(db, branch)

        return await self._with_branch(ref, request_id, "SuspendBranch", action)

    async def resume_branch(self, ref: BranchRef, request_id: str) -> BranchView:
        async def call() -> BranchView:
            _, branch = await self.read_branch(ref)
            await self.scaler.wake(branch.id, "asked by an operator")
            return self.view(*await self.read_branch(ref))

        return await self.requests.run(request_id, "ResumeBranch", call)

    async def set_suspend_after(self, ref: BranchRef, seconds: int) -> BranchView:
        """UpdateBranch's suspend_after: the branch's idle timeout (0: never, -1: the host's)."""
        async def action(db: DatabaseRecord, branch: BranchRecord) -> BranchView:
            if seconds < 0:
                await self.host.zfs.inherit(branch.dataset, L.P_SUSPEND_AFTER)
            else:
                await self.host.zfs.set_props(branch.dataset, {L.P_SUSPEND_AFTER: str(seconds)})
            branch.suspend_after = seconds
            return self.view(db, branch)

        return await self._with_branch(ref, "", "UpdateBranch", action)

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

    # --- Postgres settings and extensions --------------------------------------

    async def branch_config(self, ref: BranchRef) -> pgsettings.ConfigView:
        _, branch = await self.read_branch(ref)
        if self.host.mounted(branch):  # no lock: a long operation does not hold this up
            view = await pgsettings.read_config(self.host, branch)
            if self.host.mounted(branch):  # still: not parked while it read
                return view

        async def action(db: DatabaseRecord, branch: BranchRecord) -> pgsettings.ConfigView:
            return await pgsettings.read_config(self.host, branch)

        # A parked branch: mounted for the read, under its database's lock.
        return await self._with_branch(ref, "", "GetBranchConfig", action)

    async def set_branch_config(self, ref: BranchRef, settings: dict[str, str], restart: bool,
                                request_id: str) -> pgsettings.ConfigView:
        async def action(db: DatabaseRecord, branch: BranchRecord) -> pgsettings.ConfigView:
            return await pgsettings.set_config(self.host, db, branch, settings, restart)

        return await self._with_branch(ref, request_id, "SetBranchConfig", action)

    async def reset_branch_config(self, ref: BranchRef, names: list[str], restart: bool,
                                  request_id: str) -> pgsettings.ConfigView:
        async def action(db: DatabaseRecord, branch: BranchRecord) -> pgsettings.ConfigView:
            return await pgsettings.reset_config(self.host, db, branch, names, restart)

        return await self._with_branch(ref, request_id, "ResetBranchConfig", action)

    async def extensions(self, database: str) -> list[pgsettings.ExtensionView]:
        db = await self.get_database(database)
        if db.main is None:
            raise NotFound(f"database {db.name!r} has no main branch")
        return await pgsettings.list_extensions(self.host, db.main)
