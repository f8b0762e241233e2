"""Calls to agents: mutual-TLS channels per host, and their errors as domain errors."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc
from grpc import aio

from cygnet import errors
from cygnet.api.v1 import agent_pb2_grpc
from cygnet.rpc.auth import ForwardCaller

T = TypeVar("T")

_ERRORS: dict[grpc.StatusCode, type[errors.CygnetError]] = {
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.ABORTED: errors.Aborted,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Unavailable,
    # The agent refused the forwarded call: said as such, not as an internal error.
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
}


def domain_error(host_id: str, exc: aio.AioRpcError) -> errors.CygnetError:
    """The agent's status as the error the coordinator's interceptor maps back."""
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        trailers = exc.trailing_metadata() or ()
        field = next((str(v) for k, v in trailers if k == "cygnet-field"), "request")
        reason = details.removeprefix(f"{field}: ")
        return errors.InvalidArgument(field, reason)
    cls = _ERRORS.get(code, errors.InternalError)
    if cls is errors.Unavailable:
        return errors.Unavailable(f"host {host_id} is unavailable ({details})")
    if cls in (errors.PermissionDenied, errors.Unauthenticated):
        return cls(f"host {host_id} refused the call: {details}")
    if cls is errors.InternalError:
        return errors.InternalError(f"host {host_id}: {code.name}: {details}")
    return cls(details)


class AgentClients:
    """One channel per host address, with the coordinator's fleet certificate."""

    def __init__(self, ca: bytes, cert: bytes, key: bytes) -> None:
        self._creds = grpc.ssl_channel_credentials(ca, key, cert)
        self._channels: dict[str, aio.Channel] = {}

    def stub(self, address: str) -> agent_pb2_grpc.AgentStub:
        channel = self._channels.get(address)
        if channel is None:
            # The agent's audit log names the caller the coordinator acts for.
            channel = aio.secure_channel(address, self._creds, interceptors=[ForwardCaller()])
            self._channels[address] = channel
        return agent_pb2_grpc.AgentStub(channel)  # type: ignore[no-untyped-call]

    async def call(self, host_id: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except aio.AioRpcError as exc:
            raise domain_error(host_id, exc) from None

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
