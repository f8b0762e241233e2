"""Who is calling: a fleet certificate (mutual TLS) or a bearer token, else UNAUTHENTICATED.

The mutual-TLS listener only completes handshakes with certificates signed by
the fleet CA, so a common name in the auth context is a verified identity.
The token listener has no client certificates; there the caller must send
`authorization: Bearer TOKEN` with a token from the tokens file. Host calls
(RegisterHost, Heartbeat) need a host certificate naming that very host.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from cygnet.errors import InvalidArgument
from cygnet.pki import identity

log = logging.getLogger("cygnet.coordinator.auth")


@dataclass(frozen=True)
class Caller:
    role: str  # host | coordinator | client | token
    name: str


CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def load_tokens(path: Path | None) -> dict[str, str]:
    """token -> name, from lines of "NAME TOKEN" ('#' starts a comment)."""
    if path is None:
        return {}
    tokens: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InvalidArgument("tokens_file", f"{path}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) < 16:
            raise InvalidArgument("tokens_file", f"line {number}: want NAME TOKEN (16+ chars)")
        tokens[parts[1]] = parts[0]
    return tokens


def _from_certificate(context: aio.ServicerContext) -> Caller | None:
    names = (context.auth_context() or {}).get("x509_common_name") or []
    for raw in names:
        role, name = identity(raw.decode() if isinstance(raw, bytes) else str(raw))
        if role:
            return Caller(role, name)
    return None


def _from_token(context: aio.ServicerContext, tokens: dict[str, str]) -> Caller | None:
    for key, value in context.invocation_metadata() or ():
        if key != "authorization" or not isinstance(value, str):
            continue
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":
            continue
        for known, name in tokens.items():
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                return Caller("token", name)
    return None


class AuthInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses unauthenticated calls; health and reflection stay open for probes."""

    OPEN = ("/grpc.health.v1.Health/", "/grpc.reflection.")

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if (handler is None or handler.unary_unary is None
                or details.method.startswith(self.OPEN)):
            return handler
        inner = handler.unary_unary

        async def wrapped(request: Any, context: aio.ServicerContext) -> Any:
            caller = _from_certificate(context) or _from_token(context, self.tokens)
            if caller is None:
                log.info("%s: unauthenticated call refused", details.method)
                await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                    "send a fleet client certificate or a bearer token")
            CALLER.set(caller)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def host_refusal(host_id: str) -> str | None:
    """Why the caller may not register or beat for `host_id`, or None if it may.

    Only the host's own certificate may act for it.
    """
    caller = CALLER.get()
    if caller is not None and caller.role == "host" and caller.name == host_id:
        return None
    who = f"{caller.role}/{caller.name}" if caller else "nobody"
    return f"{who} may not act for host {host_id!r}: that host's certificate is needed"
