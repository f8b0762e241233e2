"""The agent's heartbeats on one long-lived HeartbeatStream call per coordinator.

A unary call costs the coordinator about a millisecond of CPU in gRPC's own
per-call machinery; a message on an open stream costs a fraction of that.
The stream is opened on first use and opened again after it breaks (the
coordinator restarted, stopped or ended it with an error). Every error comes
back as an AioRpcError, so the caller handles a stream exactly as it handles
unary heartbeats (NOT_FOUND: register again; UNAVAILABLE: back off or move on;
UNIMPLEMENTED: an older coordinator, use the unary RPC).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from grpc import aio

from cygnet.api.v1 import coordinator_pb2 as cpb
from cygnet.api.v1 import coordinator_pb2_grpc as cpb_grpc

log = logging.getLogger("cygnet.agent.registration")


def _error(code: grpc.StatusCode, details: str) -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details=details)


class HeartbeatStream:
    """One stream on `stub`'s channel; `beat` sends one heartbeat and reads its answer."""

    def __init__(self, stub: cpb_grpc.CoordinatorStub, address: str) -> None:
        self.stub = stub
        self.address = address
        self.call: Any = None  # aio.StreamStreamCall while open

    async def beat(self, req: cpb.HeartbeatRequest, timeout: float) -> cpb.HeartbeatResponse:
        if self.call is None:
            self.call = self.stub.HeartbeatStream()
            log.info("heartbeat stream opened to coordinator %s", self.address)
        call = self.call
        try:
            # A paused or wedged coordinator answers nothing: the timeout breaks
            # the stream, as a unary call's deadline would.
            await asyncio.wait_for(call.write(req), timeout)
            resp = await asyncio.wait_for(call.read(), timeout)
        except TimeoutError:
            self.close()
            raise _error(grpc.StatusCode.DEADLINE_EXCEEDED,
                         f"no heartbeat answer on the stream within {timeout:g}s") from None
        except asyncio.InvalidStateError:
            # The stream ended between two heartbeats (the coordinator went away):
            # its status says why.
            self.close()
            code, details = await call.code(), await call.details()
            if code == grpc.StatusCode.OK:
                code, details = grpc.StatusCode.UNAVAILABLE, "the coordinator ended the stream"
            raise _error(code, details) from None
        except BaseException:
            self.close()
            raise
        if resp is aio.EOF:  # the coordinator ended the stream (it is stopping)
            self.close()
            raise _error(grpc.StatusCode.UNAVAILABLE, "the coordinator ended the stream")
        assert isinstance(resp, cpb.HeartbeatResponse)
        return resp

    def close(self) -> None:
        if self.call is not None:
            self.call.cancel()
            self.call = None
