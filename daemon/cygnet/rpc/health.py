"""Health status shared by cygnetd and the coordinator.

The whole server's status (service "") is what waiters poll, so it says SERVING
only after every named service does, and NOT_SERVING before any of them: a
client told the server serves never finds a named service missing (NOT_FOUND).
grpc's servicer starts with "" SERVING, which a waiter would believe between the
server's start and the end of its own (seen in CI: NOT_FOUND for
cygnet.v1.Agent right after "" said SERVING), so it starts NOT_SERVING here.
"""

from __future__ import annotations

from collections.abc import Sequence

from grpc_health.v1 import health, health_pb2


async def set_serving(servicer: health.aio.HealthServicer, services: Sequence[str],
                      serving: bool) -> None:
    status = (health_pb2.HealthCheckResponse.SERVING if serving
              else health_pb2.HealthCheckResponse.NOT_SERVING)
    named = [name for name in services if name]
    for name in [*named, ""] if serving else ["", *named]:
        await servicer.set(name, status)


async def starting_servicer(services: Sequence[str]) -> health.aio.HealthServicer:
    """A health servicer that says NOT_SERVING, for the server and each service,
    until set_serving says otherwise."""
    servicer = health.aio.HealthServicer()
    await set_serving(servicer, services, False)
    return servicer
