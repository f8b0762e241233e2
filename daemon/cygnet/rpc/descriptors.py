"""The API's services as the proto descriptors define them: every method and its request type."""

from __future__ import annotations

from functools import cache

from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from cygnet.api.v1 import agent_pb2, backup_pb2, coordinator_pb2, schema_pb2


def services() -> list[ServiceDescriptor]:
    return [service for module in (agent_pb2, backup_pb2, coordinator_pb2, schema_pb2)
            for service in module.DESCRIPTOR.services_by_name.values()]


@cache
def _requests() -> dict[str, type[Message]]:
    return {f"/{service.full_name}/{method.name}":
            message_factory.GetMessageClass(method.input_type)
            for service in services() for method in service.methods}


def methods() -> list[str]:
    """Full method names, e.g. /cygnet.v1.Agent/CreateDatabase."""
    return sorted(_requests())


def request_class(method: str) -> type[Message] | None:
    return _requests().get(method)
