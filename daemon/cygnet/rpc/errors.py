"""The one place where domain errors become gRPC status codes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from cygnet import errors
from cygnet.backup.errors import CorruptRepository
from cygnet.rpc.wire import decode
from cygnet.zfs import errors as zfs_errors

log = logging.getLogger("cygnet.api")

# Ordered: subclasses before their bases.
STATUS: list[tuple[type[Exception], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (zfs_errors.DatasetNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (zfs_errors.DatasetExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (zfs_errors.HasDependents, grpc.StatusCode.FAILED_PRECONDITION),
    (zfs_errors.DatasetBusy, grpc.StatusCode.UNAVAILABLE),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (zfs_errors.OutOfSpace, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (CorruptRepository, grpc.StatusCode.DATA_LOSS),
    (zfs_errors.ZfsTimeout, grpc.StatusCode.UNAVAILABLE),
]


def status_for(exc: BaseException) -> grpc.StatusCode:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _message(exc: BaseException, code: grpc.StatusCode) -> str:
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and isinstance(exc, zfs_errors.OutOfSpace):
        return f"the pool is full: {exc}"
    if isinstance(exc, CorruptRepository) and exc.problems:
        return f"{exc}: {'; '.join(exc.problems[:3])}"
    if code == grpc.StatusCode.INTERNAL:
        return f"internal error ({type(exc).__name__}: {exc}); the daemon log has details"
    return str(exc)


async def _abort(exc: Exception, context: aio.ServicerContext, method: str) -> None:
    """Logs `exc` and ends the call with its status; INTERNAL alone gets a traceback."""
    code = status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("%s failed", method)
    else:
        log.info("%s: %s: %s", method, code.name, exc)
    if isinstance(exc, errors.InvalidArgument):
        context.set_trailing_metadata((("cygnet-field", exc.field),))
    await context.abort(code, _message(exc, code))


class ErrorInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps unary-unary and unary-stream handlers: CygnetError -> status with a clear
    message, never a traceback. A stream that fails after sending events ends with
    the same status.

    It also decodes the request itself (see wire.py), so undecodable input is
    INVALID_ARGUMENT naming the field rather than gRPC's UNKNOWN.

    INVALID_ARGUMENT also carries the field in trailing metadata `cygnet-field`.
    """

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            return _wrap_unary(handler, details.method)
        if handler.unary_stream is not None:
            return _wrap_stream(handler, details.method)
        return handler


def _request(handler: Any, raw: bytes) -> Any:
    deserialize = handler.request_deserializer
    return decode(deserialize, raw) if deserialize else raw


def _wrap_unary(handler: Any, method: str) -> Any:
    inner = handler.unary_unary

    async def wrapped(raw: bytes, context: aio.ServicerContext) -> Any:
        try:
            return await inner(_request(handler, raw), context)
        except aio.AbortError:
            raise
        except Exception as exc:
            await _abort(exc, context, method)

    return grpc.unary_unary_rpc_method_handler(
        wrapped, request_deserializer=None, response_serializer=handler.response_serializer)


def _wrap_stream(handler: Any, method: str) -> Any:
    inner = handler.unary_stream

    async def wrapped(raw: bytes, context: aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for event in inner(_request(handler, raw), context):
                yield event
        except aio.AbortError:
            raise
        except Exception as exc:
            await _abort(exc, context, method)

    return grpc.unary_stream_rpc_method_handler(
        wrapped, request_deserializer=None, response_serializer=handler.response_serializer)
