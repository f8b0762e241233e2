"""The masking RPCs of the Schema service: rules in and out, masked branches."""

from __future__ import annotations

from cygnet.agent import convert
from cygnet.agent.masked import MaskedBranches
from cygnet.agent.schema_service import SchemaService
from cygnet.api.v1 import schema_pb2 as pb
from cygnet.endpoint.uri import with_endpoint
from cygnet.masking.rules import digest


def _rules(name: str, text: str) -> pb.MaskingRules:
    return pb.MaskingRules(database=name, rules=text, digest=digest(text) if text else "")


async def set_rules(service: SchemaService, req: pb.SetMaskingRulesRequest) -> pb.MaskingRules:
    db, text = await MaskedBranches(service).set_rules(req.database, req.rules)
    return _rules(db.name, text)


async def get_rules(service: SchemaService, req: pb.GetMaskingRulesRequest) -> pb.MaskingRules:
    db, text = await MaskedBranches(service).get_rules(req.database)
    return _rules(db.name, text)


async def create(service: SchemaService, req: pb.CreateMaskedBranchRequest
                 ) -> pb.CreateMaskedBranchResponse:
    masked = MaskedBranches(service)

    async def call() -> pb.CreateMaskedBranchResponse:
        made = await masked.create(req.database, req.name, req.parent, req.refresh,
                                   req.request_id)
        host = service.host
        conn = with_endpoint(convert.connection(host.clusters.connection(made.view.record)),
                             host.config, made.view.database.name, made.view.record)
        return pb.CreateMaskedBranchResponse(
            branch=convert.branch(made.view), connection=conn, built=made.built,
            build_seconds=made.seconds, masked_snapshot=made.snapshot)

    return await service.agent.requests.run(req.request_id, "CreateMaskedBranch", call)
