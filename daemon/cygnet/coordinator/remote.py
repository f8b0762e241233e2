"""Calls to agents: mutual-TLS channels per host, and their errors as domain errors."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
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
    # A point-in-time branch outside the recoverable window, a trimmed event cursor.
    grpc.StatusCode.OUT_OF_RANGE: errors.OutOfRange,
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


# Channels kept open, most recently used first. A channel costs ~130 KB and its
# own reconnection timers: one per host of a 10,000-host fleet (each registration
# reads the host's catalog) would hold 1.3 GB for hosts rarely called again.
MAX_CHANNELS = 256
# An evicted channel is closed after this long, so calls still on it can finish.
CLOSE_GRACE = 300.0


class AgentClients:
    """Channels to host addresses, with the coordinator's fleet certificate."""

    def __init__(self, ca: bytes, cert: bytes, key: bytes,
                 max_channels: int = MAX_CHANNELS) -> None:
        self._creds = grpc.ssl_channel_credentials(ca, key, cert)
        self._channels: OrderedDict[str, aio.Channel] = OrderedDict()
        self._max = max_channels
        self._closing: set[asyncio.Task[None]] = set()

    def stub(self, address: str) -> agent_pb2_grpc.AgentStub:
        channel = self._channels.get(address)
        if channel is None:
            # The agent's audit log names the caller the coordinator acts for.
            channel = aio.secure_channel(address, self._creds, interceptors=[ForwardCaller()])
            self._channels[address] = channel
            while len(self._channels) > self._max:
                _, oldest = self._channels.popitem(last=False)
                task = asyncio.create_task(oldest.close(grace=CLOSE_GRACE))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        else:
            self._channels.move_to_end(address)
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
        for task in list(self._closing):
            task.cancel()
