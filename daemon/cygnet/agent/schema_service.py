"""Schema diff and merge as the API offers them: lookups, connections, threads.

Catalogs are read with a synchronous psycopg connection in a worker thread,
over the branch's unix socket as the superuser (peer authentication), the
way cygnetd runs all its SQL. A branch that is suspended is woken first.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from cygnet.agent.service import AgentService, BranchRef
from cygnet.errors import Aborted, InvalidArgument, NotFound
from cygnet.names import shown
from cygnet.postgres.layout import SUPERUSER_ROLE
from cygnet.schema.apply import Applied, apply
from cygnet.schema.ddl import Stmt
from cygnet.schema.hazards import Hazard, hazards
from cygnet.schema.merge import Rename
from cygnet.schema.model import Catalog
from cygnet.schema.plan import Plan, plan
from cygnet.schema.read import read_catalog

DEFAULT_DBNAME = "postgres"


@dataclass(frozen=True)
class Endpoint:
    """Where a server answers: a branch's, or a throwaway one's."""

    socket_dir: Path
    port: int
    label: str


@dataclass
class DiffResult:
    a: str
    b: str
    plan: Plan
    hazards: list[Hazard]


def connect(at: Endpoint, dbname: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(host=str(at.socket_dir), port=at.port, user=SUPERUSER_ROLE,
                               dbname=dbname or DEFAULT_DBNAME, autocommit=True,
                               connect_timeout=10, application_name="cygnetd-schema")
    except psycopg.OperationalError as exc:
        if "does not exist" in str(exc):
            raise NotFound(f"{at.label} has no SQL database {shown(dbname)}") from exc
        raise Aborted(f"cannot connect to {at.label}: {exc}") from exc


def rename_sql(conn: psycopg.Connection[Any], renames: list[Rename]) -> list[str]:
    out = []
    for r in renames:
        template, names = r.sql()
        stmt = sql.SQL(template).format(*(sql.Identifier(n) for n in names))
        out.append(stmt.as_string(conn))
    return out


def read_at(at: Endpoint, dbname: str, renames: list[Rename] | None = None) -> Catalog:
    """The catalog at `at`; with renames, as it would be after them (nothing kept)."""
    with connect(at, dbname) as conn:
        if not renames:
            return read_catalog(conn)
        conn.autocommit = False
        try:
            for stmt in rename_sql(conn, renames):
                conn.execute(stmt)
        except psycopg.Error as exc:
            raise InvalidArgument("renames", f"does not apply to the {at.label}: "
                                  f"{exc.diag.message_primary}") from exc
        try:
            return read_catalog(conn)
        finally:
            conn.rollback()


def apply_at(at: Endpoint, dbname: str, stmts: list[Stmt], renames: list[Rename]) -> Applied:
    with connect(at, dbname) as conn:
        return apply(conn, stmts, rename_sql(conn, renames))


class SchemaService:
    def __init__(self, agent: AgentService) -> None:
        self.agent = agent
        self.host = agent.host

    async def live(self, ref: BranchRef) -> Endpoint:
        """The branch's server, started if it was suspended."""
        db, branch = await self.agent.read_branch(ref)
        port = await self.agent.wake(branch.id)
        return Endpoint(self.host.clusters.socket_dir(branch), port, f"{db.name}/{branch.name}")

    async def read(self, at: Endpoint, dbname: str, renames: list[Rename] | None = None
                   ) -> Catalog:
        return await asyncio.to_thread(read_at, at, dbname, renames)

    async def diff(self, a: BranchRef, b: BranchRef, dbname: str) -> DiffResult:
        at_a, at_b = await self.live(a), await self.live(b)
        cat_a, cat_b = await asyncio.gather(self.read(at_a, dbname), self.read(at_b, dbname))
        p = await asyncio.to_thread(plan, cat_a, cat_b)
        return DiffResult(at_a.label, at_b.label, p, hazards(p, cat_a, cat_b))
