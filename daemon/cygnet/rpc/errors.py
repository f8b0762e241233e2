"""The one place where domain errors become gRPC status codes.

UNAVAILABLE means transport only (clients retry it with the same request id);
every domain failure has a status of its own. ZFS errors are translated into
domain errors by the daemon that runs ZFS (its `translate` hook), so dataset
names never reach users; anything left untranslated is INTERNAL, with an id
to find the details in the log.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from cygnet import errors
from cygnet.backup.errors import CorruptRepository
from cygnet.rpc.requests import VALIDATOR
from cygnet.rpc.validate import Validator
from cygnet.rpc.wire import decode

log = logging.getLogger("cygnet.api")

# Ordered: subclasses before their bases. Not listed (InternalError, ZfsError,
# anything else): INTERNAL.
STATUS: list[tuple[type[Exception], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    # A postmaster that did not start, a tool that timed out: done, and failed.
    (errors.Aborted, grpc.StatusCode.ABORTED),
    # Another host out of reach: the one domain error that is about transport.
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (CorruptRepository, grpc.StatusCode.DATA_LOSS),
]

# gRPC sends the message in a trailer; 8 KiB of them end the stream ("Stream removed").
MAX_MESSAGE = 1000

Translate = Callable[[Exception], Exception]


def status_for(exc: BaseException) -> grpc.StatusCode:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _message(exc: BaseException, code: grpc.StatusCode, incident: str) -> str:
    if code == grpc.StatusCode.INTERNAL:
        # The detail may name datasets, paths or commands: the log has it, not the user.
        return f"internal error (request {incident}); the daemon log has the details"
    text = str(exc)
    if isinstance(exc, CorruptRepository) and exc.problems:
        text = f"{exc}: {'; '.join(exc.problems[:3])}"
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE] + f"... ({len(text)} characters)"
    return text


def _incident(request: Any) -> str:
    """The request id to quote for an internal error: the caller's, or a new one."""
    rid = getattr(request, "request_id", "")
    return rid if isinstance(rid, str) and rid else "err-" + secrets.token_hex(4)


async def _abort(exc: Exception, context: aio.ServicerContext, method: str,
                 request: Any, translate: Translate | None) -> None:
    """Logs `exc` and ends the call with its status; INTERNAL alone gets a traceback."""
    if translate is not None:
        exc = translate(exc)
    code = status_for(exc)
    incident = _incident(request)
    if code == grpc.StatusCode.INTERNAL:
        log.error("%s failed (request %s)", method, incident, exc_info=exc)
    else:
        log.info("%s: %s: %s", method, code.name, _message(exc, code, incident))
    if isinstance(exc, errors.InvalidArgument):
        context.set_trailing_metadata((("cygnet-field", exc.field[:200]),))
    await context.abort(code, _message(exc, code, incident))


class ErrorInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps unary-unary and unary-stream handlers: CygnetError -> status with a clear
    message, never a traceback. A stream that fails after sending events ends with
    the same status.

    It also decodes the request itself (see wire.py), so undecodable input is
    INVALID_ARGUMENT naming the field rather than gRPC's UNKNOWN.

    Then it checks the request with `validator` (one table for every method, see
    requests.py), so each RPC refuses bad input alike. `translate` turns the
    serving daemon's own errors (ZFS) into domain errors first.

    INVALID_ARGUMENT also carries the field in trailing metadata `cygnet-field`.
    """

    def __init__(self, validator: Validator = VALIDATOR,
                 translate: Translate | None = None) -> None:
        self.validator = validator
        self.translate = translate

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            return self._wrap_unary(handler, details.method)
        if handler.unary_stream is not None:
            return self._wrap_stream(handler, details.method)
        if handler.stream_stream is not None:
            return self._wrap_bidi(handler, details.method)
        return handler

    def _request(self, handler: Any, method: str, raw: bytes) -> Any:
        deserialize = handler.request_deserializer
        if not deserialize:
            return raw
        request = decode(deserialize, raw)
        self.validator.check(method, request, raw)
        return request

    def _wrap_unary(self, handler: Any, method: str) -> Any:
        inner = handler.unary_unary

        async def wrapped(raw: bytes, context: aio.ServicerContext) -> Any:
            request = None
            try:
                request = self._request(handler, method, raw)
                return await inner(request, context)
            except aio.AbortError:
                raise
            except Exception as exc:
                await _abort(exc, context, method, request, self.translate)

        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=None,
            response_serializer=handler.response_serializer)

    def _wrap_stream(self, handler: Any, method: str) -> Any:
        inner = handler.unary_stream

        async def wrapped(raw: bytes, context: aio.ServicerContext) -> AsyncIterator[Any]:
            request = None
            try:
                request = self._request(handler, method, raw)
                async for event in inner(request, context):
                    yield event
            except aio.AbortError:
                raise
            except Exception as exc:
                await _abort(exc, context, method, request, self.translate)

        return grpc.unary_stream_rpc_method_handler(
            wrapped, request_deserializer=None,
            response_serializer=handler.response_serializer)

    def _wrap_bidi(self, handler: Any, method: str) -> Any:
        """Each incoming message is decoded and checked as a unary request is."""
        inner = handler.stream_stream

        async def wrapped(raws: AsyncIterator[bytes],
                          context: aio.ServicerContext) -> AsyncIterator[Any]:
            request = None

            async def requests() -> AsyncIterator[Any]:
                nonlocal request
                async for raw in raws:
                    request = self._request(handler, method, raw)
                    yield request

            try:
                async for reply in inner(requests(), context):
                    yield reply
            except aio.AbortError:
                raise
            except Exception as exc:
                await _abort(exc, context, method, request, self.translate)

        return grpc.stream_stream_rpc_method_handler(
            wrapped, request_deserializer=None,
            response_serializer=handler.response_serializer)
