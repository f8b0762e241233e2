"""The endpoint connection string the API hands out beside a branch's direct one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cygnet.endpoint.names import endpoint_name, endpoint_uri

if TYPE_CHECKING:
    from cygnet.agent.config import AgentConfig
    from cygnet.agent.inventory import BranchRecord
    from cygnet.api.v1 import agent_pb2 as pb


def with_endpoint(msg: pb.Connection, config: AgentConfig, database: str,
                  branch: BranchRecord) -> pb.Connection:
    """Fills msg.endpoint_uri (left empty when the host runs no endpoint)."""
    if not config.endpoint_port:
        return msg
    name = endpoint_name(database, branch.name, branch.id, branch.is_main)
    tls = {"sslmode": msg.sslmode or "require"}
    if msg.sslrootcert:
        tls["sslrootcert"] = msg.sslrootcert
    msg.endpoint_uri = endpoint_uri(msg.host, config.endpoint_port, config.endpoint_domain,
                                    name, msg.user, msg.password, msg.dbname, tls)
    return msg
