"""An agent's refusal of a forwarded call reaches the coordinator's caller as a refusal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc import aio

from cygnet import errors
from cygnet.coordinator.remote import AgentClients, domain_error
from cygnet.rpc.errors import status_for


def _rpc_error(code: grpc.StatusCode, details: str) -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details)


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.UNAUTHENTICATED])
def test_agent_refusal_keeps_its_status(code: grpc.StatusCode) -> None:
    err = domain_error("db-1", _rpc_error(code, "role reader may not call CreateDatabase"))
    assert not isinstance(err, errors.InternalError)
    assert status_for(err) == code
    assert "db-1" in str(err) and "CreateDatabase" in str(err)


@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
                                  grpc.StatusCode.FAILED_PRECONDITION,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
                                  grpc.StatusCode.OUT_OF_RANGE])
def test_domain_refusals_pass_through_with_their_words(code: grpc.StatusCode) -> None:
    said = "2026-11-26 15:40:05+00 is outside what can be recovered"
    err = domain_error("db-1", _rpc_error(code, said))
    assert status_for(err) == code
    assert str(err) == said


def test_unknown_status_is_still_internal() -> None:
    err = domain_error("db-1", _rpc_error(grpc.StatusCode.DATA_LOSS, "x"))
    assert status_for(err) == grpc.StatusCode.INTERNAL


def test_channels_to_hosts_are_bounded_and_the_least_recent_closed() -> None:
    async def scenario() -> None:
        ca = Path("/etc/ssl/certs/ca-certificates.crt").read_bytes()
        clients = AgentClients(ca, b"", b"", max_channels=2)
        clients.stub("unix:/nonexistent/a")
        clients.stub("unix:/nonexistent/b")
        first = clients._channels["unix:/nonexistent/a"]
        clients.stub("unix:/nonexistent/a")  # used again: now the most recent
        clients.stub("unix:/nonexistent/c")
        assert list(clients._channels) == ["unix:/nonexistent/a", "unix:/nonexistent/c"]
        assert clients._channels["unix:/nonexistent/a"] is first
        (closing,) = clients._closing
        await closing  # nothing in flight on it: closed at once
        await clients.close()
        assert not clients._channels

    asyncio.run(scenario())
