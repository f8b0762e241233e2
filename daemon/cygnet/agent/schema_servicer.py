"""The Schema gRPC servicer: thin. Converts plans, hazards and conflicts to messages."""

from __future__ import annotations

from typing import Any

from cygnet.agent import convert as agent_convert
from cygnet.agent import masked_api, migrations_api
from cygnet.agent.schema_merge import Merger, MergeResult
from cygnet.agent.schema_service import SchemaService
from cygnet.api.v1 import schema_pb2 as pb
from cygnet.api.v1 import schema_pb2_grpc as pb_grpc
from cygnet.schema import ddl
from cygnet.schema.hazards import Hazard
from cygnet.schema.merge import NOTE, Conflict
from cygnet.schema.model import AnyObj, encode
from cygnet.schema.plan import Change, Plan

Ctx = Any  # grpc.aio.ServicerContext


def _json(obj: AnyObj | None) -> str:
    return encode(obj).decode() if obj is not None else ""


def _ddl(obj: AnyObj | None) -> str:
    return ";\n".join(s.sql for s in ddl.create(obj)) + ";" if obj is not None else ""


def change(c: Change) -> pb.SchemaChange:
    obj = c.new or c.old
    assert obj is not None
    return pb.SchemaChange(action=c.action, kind=obj.kind.value, name=obj.ident,
                           before=_json(c.old), after=_json(c.new), because=c.because)


def statements(p: Plan) -> list[pb.SchemaStatement]:
    return [pb.SchemaStatement(sql=s.sql, when=s.when, object=step.key)
            for step in p.steps for s in step.stmts]


def hazard(h: Hazard) -> pb.SchemaHazard:
    return pb.SchemaHazard(kind=h.kind, object=h.object, message=h.message)


def conflict(c: Conflict) -> pb.SchemaConflict:
    obj = c.base or c.source or c.target
    assert obj is not None
    return pb.SchemaConflict(kind=obj.kind.value, name=f"{obj.ident} ({c.reason})",
                             base=_ddl(c.base), source=_ddl(c.source), target=_ddl(c.target))


def merge_response(r: MergeResult) -> pb.MergeSchemaResponse:
    out = pb.MergeSchemaResponse(
        outcome=r.outcome, base=r.base, changes=[change(c) for c in r.plan.changes],
        statements=statements(r.plan), hazards=[hazard(h) for h in r.hazards],
        conflicts=[conflict(c) for c in r.conflicts], applied=r.applied, recovery=r.recovery,
        note=NOTE, script=r.plan.script() if r.plan.steps else "",
        duration_seconds=r.seconds)
    if r.rehearsal is not None:
        out.rehearsal.CopyFrom(pb.MergeRehearsal(
            ok=r.rehearsal.ok, duration_seconds=r.rehearsal.seconds, error=r.rehearsal.error,
            failed_statement=r.rehearsal.failed))
    return out


class SchemaServicer(pb_grpc.SchemaServicer):
    def __init__(self, service: SchemaService) -> None:
        self.service = service
        self.merger = Merger(service)

    async def SchemaDiff(self, req: pb.SchemaDiffRequest, ctx: Ctx) -> pb.SchemaDiffResponse:
        a = agent_convert.branch_ref(req.a, "a")
        b = agent_convert.branch_ref(req.b, "b")
        r = await self.service.diff(a, b, req.dbname)
        return pb.SchemaDiffResponse(
            a=r.a, b=r.b, changes=[change(c) for c in r.plan.changes],
            statements=statements(r.plan), hazards=[hazard(h) for h in r.hazards],
            script=r.plan.script())

    async def MergeSchema(self, req: pb.MergeSchemaRequest, ctx: Ctx
                          ) -> pb.MergeSchemaResponse:
        source = agent_convert.branch_ref(req.source, "source")
        target = agent_convert.branch_ref(req.target, "target")

        async def call() -> MergeResult:
            return await self.merger.merge(
                source, target, dry_run=req.dry_run, renames=list(req.renames),
                dbname=req.dbname, concurrently=req.concurrently)

        result = await self.service.agent.requests.run(req.request_id, "MergeSchema", call)
        return merge_response(result)

    async def ApplyMigrations(self, req: pb.ApplyMigrationsRequest, ctx: Ctx
                              ) -> pb.MigrationsResponse:
        return await migrations_api.apply(self.service, req)

    async def MigrationStatus(self, req: pb.MigrationStatusRequest, ctx: Ctx
                              ) -> pb.MigrationsResponse:
        return await migrations_api.status(self.service, req)

    async def RollbackMigrations(self, req: pb.RollbackMigrationsRequest, ctx: Ctx
                                 ) -> pb.MigrationsResponse:
        return await migrations_api.rollback(self.service, req)

    async def SetMaskingRules(self, req: pb.SetMaskingRulesRequest, ctx: Ctx
                              ) -> pb.MaskingRules:
        return await masked_api.set_rules(self.service, req)

    async def GetMaskingRules(self, req: pb.GetMaskingRulesRequest, ctx: Ctx
                              ) -> pb.MaskingRules:
        return await masked_api.get_rules(self.service, req)

    async def CreateMaskedBranch(self, req: pb.CreateMaskedBranchRequest, ctx: Ctx
                                 ) -> pb.CreateMaskedBranchResponse:
        return await masked_api.create(self.service, req)
