"""From an endpoint name to a running branch's address, waking the branch if need be.

Names are resolved at every connect against the daemon's catalog (the host's
cache of databases, re-read from ZFS when a name is not in it), so a
connection string survives reset, restore, promote, suspend and resume.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cygnet.agent import layout as L
from cygnet.agent import replicas
from cygnet.endpoint import protocol as P
from cygnet.endpoint.names import Candidate, candidates
from cygnet.endpoint.protocol import Unroutable
from cygnet.errors import CygnetError
from cygnet.names import shown
from cygnet.states import BranchState

if TYPE_CHECKING:
    from cygnet.agent.inventory import BranchRecord, DatabaseRecord
    from cygnet.agent.service import AgentService

log = logging.getLogger("cygnet.endpoint")

# An unknown name re-reads the catalog at most this often: a flood of made-up
# names must not become a flood of `zfs get`.
REFRESH_EVERY = 1.0
# How long a connect waits for a branch that is starting anyway (create, restart).
STARTING_WAIT = 30.0
# States that end in RUNNING by themselves: a connect waits for them.
_UNDER_WAY = {BranchState.STARTING, BranchState.CREATING, BranchState.RESETTING}


@dataclass(frozen=True)
class Target:
    database: str
    branch: str
    branch_id: str
    port: int


class Router:
    def __init__(self, service: AgentService, address: str) -> None:
        self.service = service
        self.address = address  # where the branches' Postgres listens
        self._refreshed = 0.0
        self._refreshing: asyncio.Task[object] | None = None

    async def target(self, name: str) -> Target:
        db, branch = await self.resolve(name)
        port = await self._running_port(db, branch)
        return Target(db.name, branch.name, branch.id, port)

    async def resolve(self, name: str) -> tuple[DatabaseRecord, BranchRecord]:
        found = self._lookup(name)
        if not found and time.monotonic() - self._refreshed > REFRESH_EVERY:
            await self._refresh()
            found = self._lookup(name)
        if not found and (replica := self._replica_of(name)):
            # The same SQLSTATE: a multi-host string goes on to the next host.
            raise Unroutable(P.INVALID_CATALOG_NAME,
                             f"endpoint {shown(name)}: this host holds a replica of database "
                             f"{shown(replica)}, not its primary",
                             "a multi-host string with target_session_attrs=read-write finds "
                             "the primary; the replica reads through its own string "
                             "(cygnet replica list)")
        if not found:
            raise Unroutable(P.INVALID_CATALOG_NAME,
                             f"endpoint {shown(name)} does not exist on this host",
                             "an endpoint is DB, DB--BRANCH or a branch id "
                             "(cygnet connect DB/BRANCH prints it)")
        if len(found) > 1:
            readings = ", ".join(f"{db.name}/{br.name}" for db, br in found)
            raise Unroutable(P.REJECTED_CONNECTION, f"endpoint {shown(name)} is ambiguous: "
                             f"{readings}", "use the branch id as the endpoint name")
        return found[0]

    def _replica_of(self, name: str) -> str:
        """The database a replica on this host holds, if `name` would name it."""
        for c in candidates(name):
            for rec in replicas.held(self.service.host):
                if c.database:
                    hit = c.database in (rec.db.id, rec.db.name) \
                        and c.branch in ("", "main", rec.main.id)
                else:  # a branch id
                    hit = c.branch == rec.main.id
                if hit:
                    return rec.db.name or rec.db.id
        return ""

    def _lookup(self, name: str) -> list[tuple[DatabaseRecord, BranchRecord]]:
        found = [hit for c in candidates(name) if (hit := self._one(c, exact=True))]
        if not found:  # DNS names are case-insensitive; names are not
            found = [hit for c in candidates(name) if (hit := self._one(c, exact=False))]
        return list({br.id: (db, br) for db, br in found}.values())

    def _one(self, c: Candidate, *, exact: bool) -> tuple[DatabaseRecord, BranchRecord] | None:
        known = [d for d in self.service.host.known.values() if d.phase == L.PHASE_READY]
        if not c.database:  # a branch id
            db = next((d for d in known if c.branch in d.branches), None)
            return (db, db.branches[c.branch]) if db is not None else None
        dbs = [d for d in known if _same(d.id, c.database, True) or _same(d.name, c.database,
                                                                         exact)]
        if len(dbs) != 1:
            return None
        db = dbs[0]
        if not c.branch:
            return (db, db.main) if db.main is not None else None
        branches = [b for b in db.branches.values() if b.phase != L.PHASE_DELETING
                    and (b.id == c.branch or _same(b.name, c.branch, exact))]
        return (db, branches[0]) if len(branches) == 1 else None

    async def _refresh(self) -> None:
        """One catalog read, shared by every connect that asks while it runs."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self.service.host.catalog())
        try:
            await asyncio.shield(self._refreshing)
        except Exception as exc:
            raise Unroutable(P.CANNOT_CONNECT_NOW, "the host's catalog cannot be read now",
                             str(exc)[:200]) from exc
        finally:
            self._refreshed = time.monotonic()

    async def _running_port(self, db: DatabaseRecord, branch: BranchRecord) -> int:
        """The branch's port once it accepts connections, waking it if it is suspended.

        A running branch goes through wake too: it answers at once, and counts
        as activity, so the idle check does not suspend it under a connecting client.
        """
        what = f"{db.name}/{branch.name}"
        state = self.service.state_of(branch)
        if state in _UNDER_WAY:
            return await self._wait_running(what, branch)
        if state in (BranchState.FAILED, BranchState.UNAVAILABLE):
            reason = self.service.supervisor.reason(branch.id) or state.value
            raise Unroutable(P.CANNOT_CONNECT_NOW, f"branch {what} cannot start: {reason}")
        try:
            return await self.service.wake(branch.id)
        except CygnetError as exc:
            raise Unroutable(P.CANNOT_CONNECT_NOW, f"branch {what} cannot start: {exc}") from None

    async def _wait_running(self, what: str, branch: BranchRecord) -> int:
        """Polls the branch (as the catalog now has it: a reset gives it new data) until
        it runs; the database is re-read from ZFS every second in case the cache lags."""
        deadline = time.monotonic() + STARTING_WAIT
        reread = 0.0  # at once: a cached record may be the data a reset replaced
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if time.monotonic() > reread:
                reread = time.monotonic() + 1.0
                await self.service.host.database_inventory(branch.database_id,
                                                           snapshots=False)
            db = self.service.host.find_branch(branch.id)
            if db is None:
                raise Unroutable(P.INVALID_CATALOG_NAME, f"branch {what} was deleted")
            branch = db.branches[branch.id]
            state = self.service.state_of(branch)
            if state == BranchState.RUNNING and branch.port:
                return branch.port
            if state not in _UNDER_WAY:
                return await self._running_port(db, branch)
        reason = self.service.supervisor.reason(branch.id)
        raise Unroutable(P.CANNOT_CONNECT_NOW, f"branch {what} did not start in "
                         f"{STARTING_WAIT:.0f} s" + (f": {reason}" if reason else ""))


def _same(value: str, wanted: str, exact: bool) -> bool:
    return value == wanted if exact else value.casefold() == wanted.casefold()
