"""Per-operation metrics: every RPC is an operation (CreateBranch -> create_branch).

Failures are `cygnet_operations_total{code!="OK"}`: no second counter.

The interceptor must sit *outside* ErrorInterceptor (first in the server's
list): the error mapping turns exceptions into `context.abort(code)`, and only
after that does the status code exist for us to count.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from grpc import aio
from prometheus_client import Counter, Histogram

from cygnet.metrics import REGISTRY

# Creating a database or branch takes 0.2-2 s; a reset or a backup can take minutes.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           120.0, 300.0, 900.0)

OPERATIONS = Counter("cygnet_operations", "Operations finished, by status code",
                     ["service", "operation", "code"], registry=REGISTRY)
DURATION = Histogram("cygnet_operation_duration_seconds", "Time an operation took",
                     ["service", "operation"], buckets=BUCKETS, registry=REGISTRY)


def operation_name(method: str) -> str:
    """'/cygnet.v1.Agent/CreateBranch' -> 'create_branch'."""
    name = method.rsplit("/", 1)[-1]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def observe(service: str, operation: str, code: str, seconds: float) -> None:
    OPERATIONS.labels(service, operation, code).inc()
    DURATION.labels(service, operation).observe(seconds)


@contextmanager
def timed(service: str, operation: str) -> Iterator[None]:
    """For work outside an RPC (a scheduled backup): OK, or INTERNAL when it raises."""
    start = time.perf_counter()
    code = "INTERNAL"
    try:
        yield
        code = "OK"
    finally:
        observe(service, operation, code, time.perf_counter() - start)


def _code_of(context: aio.ServicerContext, exc: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):  # some grpc versions hand back the raw enum value
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    if exc is None:
        return "OK"
    return "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "UNKNOWN"


class MetricsInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Counts and times unary RPCs; streaming handlers pass through untouched."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        operation = operation_name(details.method)
        service = self.service

        async def wrapped(request: Any, context: aio.ServicerContext) -> Any:
            start = time.perf_counter()
            failure: BaseException | None = None
            try:
                return await inner(request, context)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                observe(service, operation, _code_of(context, failure),
                        time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
