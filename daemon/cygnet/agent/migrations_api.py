"""The migration RPCs of the Schema service: requests to migrations, results to messages."""

from __future__ import annotations

from cygnet.agent import convert as agent_convert
from cygnet.agent.migrations import Migrations, Outcome
from cygnet.agent.schema_service import SchemaService
from cygnet.api.v1 import schema_pb2 as pb
from cygnet.migrate.files import Migration, ordered
from cygnet.migrate.run import Run


def files(items: list[pb.MigrationFile]) -> list[Migration]:
    return ordered([Migration(f.version, f.name, f.up, f.down, f.file) for f in items])


def _run(r: Run) -> pb.MigrationRun:
    return pb.MigrationRun(version=r.version, name=r.name, direction=r.direction,
                           duration_seconds=r.seconds,
                           locks=[pb.MigrationLock(locktype=t, relation=rel, mode=mode)
                                  for t, rel, mode in r.locks])


def response(o: Outcome) -> pb.MigrationsResponse:
    return pb.MigrationsResponse(
        branch=o.branch,
        migrations=[pb.MigrationRecord(version=r.version, name=r.name, checksum=r.checksum,
                                       applied_at=r.applied_at, duration_seconds=r.duration,
                                       state=r.state, origin=r.origin) for r in o.rows],
        rehearsal=[_run(r) for r in o.rehearsal], rehearsal_seconds=o.rehearsal_seconds,
        ran=[_run(r) for r in o.ran])


async def apply(service: SchemaService, req: pb.ApplyMigrationsRequest) -> pb.MigrationsResponse:
    ref = agent_convert.branch_ref(req.branch, "branch")
    todo = files(list(req.migrations))

    async def call() -> Outcome:
        return await Migrations(service).apply(ref, todo, req.dbname, req.rehearse)

    return response(await service.agent.requests.run(req.request_id, "ApplyMigrations", call))


async def status(service: SchemaService, req: pb.MigrationStatusRequest
                 ) -> pb.MigrationsResponse:
    ref = agent_convert.branch_ref(req.branch, "branch")
    return response(await Migrations(service).status(ref, files(list(req.migrations)),
                                                     req.dbname))


async def rollback(service: SchemaService, req: pb.RollbackMigrationsRequest
                   ) -> pb.MigrationsResponse:
    ref = agent_convert.branch_ref(req.branch, "branch")
    given = files(list(req.migrations))

    async def call() -> Outcome:
        return await Migrations(service).rollback(ref, given, req.to_version, req.dbname)

    return response(await service.agent.requests.run(req.request_id, "RollbackMigrations",
                                                     call))
