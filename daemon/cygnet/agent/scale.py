"""Scale to zero: suspend a branch, resume it, and wake it when a client needs it.

A suspended branch (`cygnet:desired=suspended`) keeps its dataset but runs no
postmaster and holds no port: its `cygnet:port` is removed, so the port goes
back to the pool, and a resume may get another one (the stable address is the
host's endpoint). A stopped branch (StopBranch) is an operator's hard stop: it
keeps its port and is never woken by a client.

The states, per branch, all changed under the database's lock:

    running --suspend--> suspending --(postmaster stopped, port dropped)--> suspended
    suspended --wake--> waking --(port, desired=running, postmaster ready)--> running

`wake` is what a connecting client calls. Any number of concurrent callers
share one start (one task per branch). A wake that arrives while the branch
is suspending does not get the port of the postmaster being stopped: it
waits for the database's lock, that is for the stop to finish, and then
starts the branch again. So a connect storm during a suspend leaves the
branch running.

Crash safety: suspend writes desired=suspended before it stops Postgres and
drops the port after; wake writes the port before desired=running. Whatever
a crash leaves, the reconciler stops a postmaster that should not run, drops
the port of a suspended branch and starts a branch that should run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time

from cygnet.agent import layout as L
from cygnet.agent.events import EventKind, emit
from cygnet.agent.failures import Translator
from cygnet.agent.host import Host
from cygnet.agent.idle import backends, wal_to_archive
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.agent.supervisor import Supervisor
from cygnet.errors import Aborted, CygnetError, FailedPrecondition, NotFound
from cygnet.postgres import process
from cygnet.states import Desired
from cygnet.zfs import ZfsError

log = logging.getLogger("cygnet.agent")

# A failed wake is answered again, without a new start, for this long (seconds):
# a connect storm against a branch that cannot start costs one attempt per second.
WAKE_FAILURE_HOLD = 1.0
# Server log lines that explain a failed start.
_REASON = re.compile(r"\b(FATAL|PANIC|DETAIL|HINT):\s+(.*)")


def _label(db: DatabaseRecord, branch: BranchRecord) -> str:
    return f"{db.name}/{branch.name}"


def _server_says(message: str) -> str:
    """A failed start's message with, of its server log tail, only the lines that
    say why (FATAL, PANIC and their DETAIL and HINT): the reason a waiting client
    reads, kept short enough for an error message."""
    head, _, tail = message.partition("; last log lines:")
    why = [f"{m[1]}: {m[2]}" for line in tail.splitlines() if (m := _REASON.search(line))]
    return f"{head}: {' '.join(why)}" if why else head


class Scaler:
    def __init__(self, host: Host, supervisor: Supervisor) -> None:
        self.host = host
        self.supervisor = supervisor
        self._wakes: dict[str, asyncio.Future[int]] = {}
        self._suspending: set[str] = set()
        self._activity: dict[str, float] = {}  # branch id -> monotonic time of its last wake
        self._failed: dict[str, tuple[float, CygnetError]] = {}
        self.starts = 0  # postmasters started by wake or resume
        self.suspends = 0
        self.wake_failures = 0

    # --- what others ask -----------------------------------------------------

    def is_suspending(self, branch_id: str) -> bool:
        return branch_id in self._suspending

    def last_activity(self, branch_id: str) -> float:
        """When a client last asked for the branch (monotonic; 0: never)."""
        return self._activity.get(branch_id, 0.0)

    def failure(self, branch_id: str) -> str:
        """Why the branch's last wake failed ("" if it did not)."""
        failed = self._failed.get(branch_id)
        return str(failed[1]) if failed else ""

    async def wake(self, branch_id: str, reason: str = "a client connected") -> int:
        """The branch's TCP port once it accepts connections, starting it if suspended.

        One start for any number of concurrent callers. Raises a CygnetError
        saying why when the branch cannot run (stopped by an operator, pool full,
        Postgres does not start, ...).
        """
        self._activity[branch_id] = time.monotonic()
        if branch_id not in self._suspending:
            port = self._running_port(branch_id)
            if port:
                return port
        failed = self._failed.get(branch_id)
        if failed is not None and time.monotonic() - failed[0] < WAKE_FAILURE_HOLD:
            raise failed[1]
        future = self._wakes.get(branch_id)
        if future is None:
            future = asyncio.ensure_future(self._wake(branch_id, reason))
            self._wakes[branch_id] = future
            future.add_done_callback(functools.partial(self._wake_done, branch_id))
        # Shielded: a client that gives up does not cancel the others' start.
        return await asyncio.shield(future)

    def _running_port(self, branch_id: str) -> int:
        db = self.host.find_branch(branch_id)
        branch = db.branches.get(branch_id) if db is not None else None
        if (branch is None or branch.desired != Desired.RUNNING or not branch.port
                or not self.host.clusters.accepting(branch)):
            return 0
        return branch.port

    def _wake_done(self, branch_id: str, future: asyncio.Future[int]) -> None:
        if self._wakes.get(branch_id) is future:
            del self._wakes[branch_id]
        if future.cancelled():
            return
        exc = future.exception()  # retrieved, even when every caller has gone
        if isinstance(exc, CygnetError):
            self._failed[branch_id] = (time.monotonic(), exc)
            self.supervisor.keep_mounted(branch_id)
            self.wake_failures += 1
        else:
            self._failed.pop(branch_id, None)

    async def _wake(self, branch_id: str, reason: str) -> int:
        db_id = await self._database_id(branch_id)
        try:
            async with self.host.db_locks[db_id]:
                db, branch = await self._read(db_id, branch_id)
                return await self.resume_locked(db, branch, reason)
        except ZfsError as exc:
            raise Translator(self.host)(exc) from exc

    async def _database_id(self, branch_id: str) -> str:
        db = self.host.find_branch(branch_id)
        if db is None:
            await self.host.catalog()
            db = self.host.find_branch(branch_id)
        if db is None:
            raise NotFound(f"branch {branch_id} not found")
        return db.id

    async def _read(self, db_id: str, branch_id: str) -> tuple[DatabaseRecord, BranchRecord]:
        """The branch freshly read from ZFS; the caller holds the database's lock."""
        inv = await self.host.database_inventory(db_id, snapshots=False)
        db = inv.databases.get(db_id)
        if db is None or db.phase == L.PHASE_DELETING or branch_id not in db.branches:
            raise NotFound(f"branch {branch_id} not found")
        return db, db.branches[branch_id]

    # --- under the database's lock --------------------------------------------

    async def resume_locked(self, db: DatabaseRecord, branch: BranchRecord, reason: str) -> int:
        """Makes a suspended (or failed) branch run; returns its port."""
        if branch.phase != L.PHASE_READY:
            raise FailedPrecondition(f"branch {_label(db, branch)} is {branch.phase}")
        if branch.desired == Desired.STOPPED:
            raise FailedPrecondition(
                f"branch {_label(db, branch)} was stopped by an operator: start it with "
                f"`cygnet branch start {_label(db, branch)}`")
        if self.host.clusters.accepting(branch):
            return branch.port
        live = self.host.clusters.live(branch)
        if live is not None:  # still starting (crash recovery): wait for it
            await process.wait_ready(live, self.host.clusters.files(branch).log_file)
            return branch.port
        return await self.start_locked(db, branch, reason)

    async def start_locked(self, db: DatabaseRecord, branch: BranchRecord, reason: str) -> int:
        """Starts a branch that does not run, giving it a port if it has none, and
        records it as running; on failure leaves it as it was and says why."""
        await self.supervisor.require_data(branch)  # mounts it, or says why not
        was, fresh_port = branch.desired, not branch.port
        if fresh_port:
            branch.port = self.host.ports.reserve()
        started = time.monotonic()
        # Room first, before anything says "running": a start undone after the
        # supervisor saw desired=running could be started again by it.
        results: list[object] = []
        try:
            await self.host.space.require_free(branch.dataset, f"waking {_label(db, branch)}")
        except Exception as exc:  # said to the waiting clients by _why, as any failure
            results.append(exc)
        if not results:
            # The start and the ZFS writes take similar time: run them together. A
            # crash meanwhile leaves a postmaster the reconciler stops (desired is
            # not yet running) or a branch it starts (desired is).
            results = list(await asyncio.gather(
                self.host.clusters.start(branch, db),
                self._record_running(branch, fresh_port),
                return_exceptions=True))
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await self._undo_start(branch, was, fresh_port)
            raise self._why(db, branch, failure) from failure
        if fresh_port:
            self.host.ports.commit(branch.port)
        self.supervisor.forget(branch.id)
        self._failed.pop(branch.id, None)
        self.starts += 1
        log.info("branch %s (%s) running on port %d in %.3fs: %s", _label(db, branch),
                 branch.id, branch.port, time.monotonic() - started, reason)
        if was != Desired.RUNNING:
            emit(EventKind.RESUMED, database_id=db.id, branch_id=branch.id, database=db.name,
                 branch=branch.name, reason=reason)
        return branch.port

    async def _record_running(self, branch: BranchRecord, fresh_port: bool) -> None:
        # The port first: a branch that should run always has one.
        if fresh_port:
            await self.host.zfs.set_props(branch.dataset, {L.P_PORT: str(branch.port)})
        if branch.desired != Desired.RUNNING:
            await self.host.zfs.set_props(branch.dataset, {L.P_DESIRED: Desired.RUNNING})
            branch.desired = Desired.RUNNING

    async def _undo_start(self, branch: BranchRecord, was: str, fresh_port: bool) -> None:
        try:
            if self.host.clusters.live(branch) is not None:
                await self.host.clusters.stop(branch, "fast")
            if was != Desired.RUNNING:
                await self.host.zfs.set_props(branch.dataset, {L.P_DESIRED: was})
            if fresh_port:
                await self.host.zfs.inherit(branch.dataset, L.P_PORT)
        except Exception:
            log.exception("branch %s: undoing a failed start failed", branch.id)
        branch.desired = was
        if fresh_port:
            self.host.ports.release(branch.port)
            branch.port = 0

    def _why(self, db: DatabaseRecord, branch: BranchRecord, exc: BaseException
             ) -> BaseException:
        """The error callers get: what failed, about the branch as users name it."""
        if isinstance(exc, ZfsError):
            exc = Translator(self.host)(exc)
        if isinstance(exc, asyncio.CancelledError):
            return exc
        what = f"branch {_label(db, branch)} did not start"
        if isinstance(exc, CygnetError):
            return type(exc)(f"{what}: {_server_says(str(exc))}")
        log.error("%s", what, exc_info=exc)
        return Aborted(f"{what}: an internal error (see cygnetd's log)")

    async def suspend_locked(self, db: DatabaseRecord, branch: BranchRecord,
                             reason: str = "asked by an operator") -> None:
        """SuspendBranch: refused while WAL waits to be archived or replicas are
        attached; clients still connected are disconnected (a fast stop)."""
        if branch.phase != L.PHASE_READY:
            raise FailedPrecondition(f"branch {_label(db, branch)} is {branch.phase}")
        if (branch.desired == Desired.SUSPENDED and not branch.port
                and self.host.clusters.live(branch) is None):
            return
        self.check_can_suspend(db, branch)
        await self._suspend(db, branch, reason)

    def check_can_suspend(self, db: DatabaseRecord, branch: BranchRecord) -> None:
        live = self.host.clusters.live(branch)
        if live is not None:
            replicas = backends(live.pid).walsenders
            if replicas:
                raise FailedPrecondition(
                    f"branch {_label(db, branch)} has {replicas} replica(s) attached "
                    "(pg_stat_replication): it stays running")
        waiting = wal_to_archive(self.host.clusters.pgdata(branch))
        if waiting:
            raise FailedPrecondition(
                f"branch {_label(db, branch)} has {waiting} WAL segment(s) still to archive "
                "(pg_stat_archiver): it stays running")

    async def _suspend(self, db: DatabaseRecord, branch: BranchRecord, reason: str) -> None:
        self._suspending.add(branch.id)
        started = time.monotonic()
        try:
            if branch.desired != Desired.SUSPENDED:
                await self.host.zfs.set_props(branch.dataset, {L.P_DESIRED: Desired.SUSPENDED})
                branch.desired = Desired.SUSPENDED
            await self.host.clusters.stop(branch, "fast")
            await self.drop_port(branch)
            await self.host.park(branch)
        finally:
            self._suspending.discard(branch.id)
        self.supervisor.forget(branch.id)
        self.suspends += 1
        log.info("branch %s (%s) suspended in %.3fs: %s", _label(db, branch), branch.id,
                 time.monotonic() - started, reason)
        emit(EventKind.SUSPENDED, database_id=db.id, branch_id=branch.id, database=db.name,
             branch=branch.name, reason=reason)

    async def drop_port(self, branch: BranchRecord) -> None:
        """A suspended branch holds no port: remove it from ZFS and give it back."""
        if branch.port:
            await self.host.zfs.inherit(branch.dataset, L.P_PORT)
            self.host.ports.release(branch.port)
            branch.port = 0

    async def suspend_idle(self, db_id: str, branch_id: str, timeout: float) -> None:
        """The idle suspender's call: suspends unless something changed meanwhile."""
        lock = self.host.db_locks[db_id]
        if lock.locked():
            return  # an operation runs on it; the next round looks again
        async with lock:
            try:
                db, branch = await self._read(db_id, branch_id)
            except NotFound:
                return
            live = self.host.clusters.live(branch)
            if (branch.phase != L.PHASE_READY or branch.desired != Desired.RUNNING
                    or live is None or backends(live.pid).clients
                    or time.monotonic() - self.last_activity(branch_id) < timeout):
                return
            try:
                self.check_can_suspend(db, branch)
            except FailedPrecondition as exc:
                log.debug("not suspending an idle branch: %s", exc)
                return
            await self._suspend(db, branch, f"no client connection for {timeout:g}s")
