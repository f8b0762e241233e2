"""Placement and routing: a new database goes to the best host, the rest to its own host."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.coordinator.config import CoordinatorConfig
from cygnet.coordinator.leadership import Leadership
from cygnet.coordinator.models import CatalogEntry, Constraints, Demand, HostRecord, PlaceRequest
from cygnet.coordinator.registry import entry_from_database
from cygnet.coordinator.remote import AgentClients
from cygnet.coordinator.scoring import Choice
from cygnet.coordinator.store.sql import SqlStore
from cygnet.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from cygnet.names import validate_name, validate_request_id

QUERY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Placed:
    choice: Choice
    reservation_id: str


@dataclass(frozen=True)
class Located:
    entry: CatalogEntry
    host: HostRecord | None

    @property
    def available(self) -> bool:
        return self.host is not None and self.host.available


def _version(value: str) -> str:
    if value and not value.isdigit():
        raise InvalidArgument("postgres_version", f"{value!r} is not a major version like 15")
    return value


class Router:
    def __init__(self, store: SqlStore, config: CoordinatorConfig, clients: AgentClients,
                 leadership: Leadership | None = None) -> None:
        self.store = store
        self.config = config
        self.clients = clients
        # The leader places from its index; any other coordinator through the store.
        self.leadership = leadership

    # --- placement ---------------------------------------------------------------

    async def place(self, size: str, version: str, constraints: Constraints, dry_run: bool,
                    name: str | None = None, request_id: str = "") -> Placed:
        demand = Demand.for_size(size)
        reservation = None
        placer = self.leadership.active_placer() if self.leadership else None
        if request_id:
            validate_request_id("request_id", request_id)
        if request_id and not dry_run and placer is None:
            # (The leader looks request ids up in its batch: no extra round trip.)
            found = await asyncio.to_thread(self.store.find_request, request_id)
            if found is not None:
                # A retry, maybe to another coordinator after a leader change: the first answer.
                return Placed(Choice(found.host_id, "", 1.0, "retry of an earlier request", 0, 0),
                              found.id)
        if not dry_run:
            now = time.time()
            reservation = CatalogEntry(
                "r-" + secrets.token_hex(8), name, "", demand.size_class, _version(version),
                memory_bytes=demand.memory_bytes, disk_bytes=demand.disk_bytes,
                group=constraints.anti_affinity_group, state="reserved", request_id=request_id,
                expires_at=now + self.config.reservation_ttl, created_at=now)
        req = PlaceRequest(demand, _version(version), constraints, reservation)
        if placer is not None:
            return Placed(*await placer.place(req, await self._avoided(constraints)))
        choice = await asyncio.to_thread(self.store.place, req)
        return Placed(choice, reservation.id if reservation else "")

    async def _avoided(self, constraints: Constraints) -> set[str]:
        """The hosts of the databases a placement must avoid."""
        hosts = set()
        for ref in constraints.avoid_databases:
            entry = (await asyncio.to_thread(self.store.get_entry, ref)
                     or await asyncio.to_thread(self.store.find_database, ref))
            if entry is not None:
                hosts.add(entry.host_id)
        return hosts

    async def _freed(self, host_id: str) -> None:
        placer = self.leadership.active_placer() if self.leadership else None
        if placer is not None:
            await placer.refresh(host_id)

    async def create_database(self, req: apb.CreateDatabaseRequest, constraints: Constraints,
                              reservation_id: str) -> tuple[apb.CreateDatabaseResponse, Placed]:
        validate_name("database.name", req.name)
        request_id = req.request_id or "coord-" + secrets.token_hex(8)
        placed = await self._reservation_for(req, constraints, reservation_id, request_id)
        host = await self._host(placed.choice.host_id)
        # Every field goes along (quota, settings): only the request id is the coordinator's.
        forward = apb.CreateDatabaseRequest()
        forward.CopyFrom(req)
        forward.request_id = request_id
        try:
            resp: apb.CreateDatabaseResponse = await self.clients.call(
                host.id, self.clients.stub(host.address).CreateDatabase(
                    forward, timeout=self.config.agent_timeout))
        except Exception:
            await asyncio.to_thread(self.store.release, placed.reservation_id)
            await self._freed(host.id)
            raise
        entry = entry_from_database(host.id, resp.database)
        entry = CatalogEntry(**{**entry.__dict__, "request_id": request_id,
                                "group": constraints.anti_affinity_group})
        await asyncio.to_thread(self.store.confirm, placed.reservation_id, entry)
        await asyncio.to_thread(self.store.add_branch, resp.main_branch.id, entry.id)
        return resp, placed

    async def _reservation_for(self, req: apb.CreateDatabaseRequest, constraints: Constraints,
                               reservation_id: str, request_id: str) -> Placed:
        if req.request_id:
            # A retry goes to the same host, which answers with its first result.
            found = await asyncio.to_thread(self.store.find_request, req.request_id)
            if found is not None:
                choice = Choice(found.host_id, "", 1.0, "retry of an earlier request", 0, 0)
                return Placed(choice, found.id)
        if await asyncio.to_thread(self.store.find_database, req.name) is not None:
            raise AlreadyExists(f"database {req.name!r} exists already")
        if reservation_id:
            entry = await asyncio.to_thread(self.store.get_entry, reservation_id)
            if entry is None or entry.state != "reserved":
                raise NotFound(f"reservation {reservation_id!r} not found (expired?)")
            if entry.size_class != Demand.for_size(req.size_class).size_class:
                raise InvalidArgument("database.size_class", "differs from the reservation's")
            return Placed(Choice(entry.host_id, "", 1.0, "reserved earlier", 0, 0), entry.id)
        return await self.place(req.size_class, req.postgres_version, constraints, False,
                                name=req.name, request_id=request_id)

    # --- lookups -------------------------------------------------------------------

    async def _host(self, host_id: str) -> HostRecord:
        host = await asyncio.to_thread(self.store.get_host, host_id)
        if host is None:
            raise NotFound(f"host {host_id!r} not found")
        return host

    async def locate(self, ref: str, field: str = "database") -> Located:
        if not ref:
            raise InvalidArgument(field, "must not be empty")
        entry = await asyncio.to_thread(self.store.find_database, ref)
        if entry is None:
            raise NotFound(f"database {ref!r} not found")
        return Located(entry, await asyncio.to_thread(self.store.get_host, entry.host_id))

    async def live_host(self, ref: str, field: str = "database") -> tuple[Located, HostRecord]:
        """The database's host, or Unavailable when the host is down: not lost, unreachable."""
        loc = await self.locate(ref, field)
        if loc.host is None or not loc.available:
            raise Unavailable(f"database {ref!r} is on host {loc.entry.host_id}, which is "
                              "unavailable; the database is not lost and returns with its host")
        return loc, loc.host

    async def branch_host(self, ref: apb.BranchRef) -> tuple[Located, HostRecord]:
        if ref.database:
            return await self.live_host(ref.database, "branch.database")
        if not ref.branch_id:
            raise InvalidArgument("branch", "give a branch_id, or a database and a branch name")
        db_id = await asyncio.to_thread(self.store.branch_database, ref.branch_id)
        if db_id is None:
            raise NotFound(f"branch {ref.branch_id!r} not found")
        return await self.live_host(db_id, "branch.branch_id")

    async def list_databases(self) -> list[Located]:
        entries = await asyncio.to_thread(self.store.list_databases)
        hosts = {h.id: h for h in await asyncio.to_thread(self.store.list_hosts)}
        return [Located(e, hosts.get(e.host_id)) for e in entries]

    # --- routed calls ----------------------------------------------------------------

    async def get_database(self, ref: str) -> tuple[Located, apb.Database | None]:
        loc = await self.locate(ref)
        if loc.host is None or not loc.available:
            return loc, None
        try:
            db = await self.clients.call(loc.host.id, self.clients.stub(
                loc.host.address).GetDatabase(apb.GetDatabaseRequest(database=loc.entry.id),
                                              timeout=QUERY_TIMEOUT))
        except Unavailable:
            return Located(loc.entry, None), None
        return loc, db

    async def delete_database(self, req: apb.DeleteDatabaseRequest
                              ) -> apb.DeleteDatabaseResponse:
        loc, host = await self.live_host(req.database)
        forward = apb.DeleteDatabaseRequest(database=loc.entry.id, request_id=req.request_id)
        try:
            resp: apb.DeleteDatabaseResponse = await self.clients.call(
                host.id, self.clients.stub(host.address).DeleteDatabase(
                    forward, timeout=self.config.agent_timeout))
        except NotFound:
            resp = apb.DeleteDatabaseResponse(database_id=loc.entry.id)
        await asyncio.to_thread(self.store.release, loc.entry.id)
        await self._freed(loc.entry.host_id)
        return resp

    async def create_branch(self, req: apb.CreateBranchRequest) -> apb.CreateBranchResponse:
        loc, host = await self.live_host(req.database)
        forward = apb.CreateBranchRequest()
        forward.CopyFrom(req)
        forward.database = loc.entry.id
        resp: apb.CreateBranchResponse = await self.clients.call(
            host.id, self.clients.stub(host.address).CreateBranch(
                forward, timeout=self.config.agent_timeout))
        await asyncio.to_thread(self.store.add_branch, resp.branch.id, loc.entry.id)
        return resp

    async def delete_branch(self, req: apb.DeleteBranchRequest) -> apb.DeleteBranchResponse:
        _, host = await self.branch_host(req.branch)
        resp: apb.DeleteBranchResponse = await self.clients.call(
            host.id, self.clients.stub(host.address).DeleteBranch(
                req, timeout=self.config.agent_timeout))
        await asyncio.to_thread(self.store.remove_branches, list(resp.deleted_branch_ids))
        return resp

    async def reset_branch(self, req: apb.ResetBranchRequest) -> apb.Branch:
        _, host = await self.branch_host(req.branch)
        result: apb.Branch = await self.clients.call(
            host.id, self.clients.stub(host.address).ResetBranch(
                req, timeout=self.config.agent_timeout))
        return result

    async def get_branch(self, req: apb.GetBranchRequest) -> apb.Branch:
        _, host = await self.branch_host(req.branch)
        result: apb.Branch = await self.clients.call(
            host.id, self.clients.stub(host.address).GetBranch(req, timeout=QUERY_TIMEOUT))
        return result

    async def get_connection(self, req: apb.GetConnectionRequest) -> apb.Connection:
        _, host = await self.branch_host(req.branch)
        result: apb.Connection = await self.clients.call(
            host.id, self.clients.stub(host.address).GetConnection(req, timeout=QUERY_TIMEOUT))
        return result

    async def list_branches(self, req: apb.ListBranchesRequest) -> apb.ListBranchesResponse:
        if not req.database:
            raise FailedPrecondition("the coordinator lists the branches of one database: "
                                     "give `database`")
        _, host = await self.live_host(req.database)
        result: apb.ListBranchesResponse = await self.clients.call(
            host.id, self.clients.stub(host.address).ListBranches(req, timeout=QUERY_TIMEOUT))
        return result
