"""The whole server's health ("") never runs ahead of its named services."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2

from cygnet.rpc.health import set_serving, starting_servicer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Recording(health.aio.HealthServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    async def set(self, service: str, status: int) -> None:
        self.calls.append((service, status))
        await super().set(service, status)


def test_serving_names_every_service_before_the_whole_server() -> None:
    servicer = Recording()
    asyncio.run(set_serving(servicer, ("a.A", "b.B"), True))
    assert servicer.calls == [("a.A", SERVING), ("b.B", SERVING), ("", SERVING)]


def test_not_serving_takes_the_whole_server_down_first() -> None:
    servicer = Recording()
    asyncio.run(set_serving(servicer, ("a.A", "", "b.B"), False))
    assert servicer.calls == [("", NOT_SERVING), ("a.A", NOT_SERVING), ("b.B", NOT_SERVING)]


def test_a_new_servicer_says_not_serving_until_told() -> None:
    """grpc's own starts with "" SERVING: a waiter would believe it while the server
    still starts, and then find its services NOT_FOUND."""

    async def check() -> list[int]:
        servicer = await starting_servicer(("a.A",))
        assert health.aio.HealthServicer()._server_status[""] == SERVING  # grpc's default
        return [servicer._server_status[name] for name in ("", "a.A")]

    assert asyncio.run(check()) == [NOT_SERVING, NOT_SERVING]
