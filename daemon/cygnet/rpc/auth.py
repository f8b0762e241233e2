"""Who is calling, may they, and the audit line: one interceptor for both daemons.

Identity, in this order:
  - the agent's plain unix socket (root only by its mode): local/root, role admin;
  - a client certificate (the TLS listener verified it against the fleet CA):
    its common name, e.g. client/alice, unless the deny list revokes it;
    a coordinator certificate may name the caller it acts for in the
    `cygnet-caller` and `cygnet-caller-role` headers (forwarded calls);
  - a bearer token from the coordinator's tokens file: token/NAME;
  - nothing: UNAUTHENTICATED (or, on a daemon with the lab-only switch,
    `anonymous` with the admin role).
The role comes from the `roles` setting (rpc/roles.py) and the method must allow
it, else PERMISSION_DENIED naming the role and the method.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc import aio

from cygnet.rpc.audit import AuditLog, request_id_of, target_of
from cygnet.rpc.descriptors import request_class
from cygnet.rpc.revocation import DenyList
from cygnet.rpc.roles import OPEN_PREFIXES, Role, RoleMap, allowed, audited

log = logging.getLogger("cygnet.auth")

FORWARD_IDENTITY = "cygnet-caller"
FORWARD_ROLE = "cygnet-caller-role"
LOCAL = "local/root"
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Caller:
    identity: str  # client/alice, host/h1, token/ci, local/root, anonymous
    role: str  # "" when the identity has none
    via: str = ""  # the coordinator that forwarded the call

    @property
    def kind(self) -> str:
        return self.identity.partition("/")[0]

    @property
    def name(self) -> str:
        return self.identity.partition("/")[2]


CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


class Refused(Exception):
    """The caller is not authenticated; the message says why (for the log and the caller)."""

    def __init__(self, reason: str, identity: str = "") -> None:
        super().__init__(reason)
        self.identity = identity  # what the refused certificate claimed, for the audit


def _first(values: Any) -> str:
    for raw in values or ():
        return raw.decode() if isinstance(raw, bytes) else str(raw)
    return ""


@dataclass
class AuthPolicy:
    roles: RoleMap
    deny: DenyList = field(default_factory=lambda: DenyList(None))
    audit: AuditLog = field(default_factory=AuditLog)
    # token -> (name, role or ""): the coordinator's token listener.
    tokens: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # Lab-only: the role of TCP callers without a certificate; None refuses them.
    anonymous_role: str | None = None

    def identify(self, context: aio.ServicerContext) -> Caller:
        auth = context.auth_context() or {}
        security = _first(auth.get("transport_security_type"))
        if security == "insecure" and (context.peer() or "").startswith("unix:"):
            return Caller(LOCAL, Role.ADMIN)
        common_name = _first(auth.get("x509_common_name"))
        if common_name:
            return self._from_certificate(context, common_name,
                                          _first(auth.get("x509_pem_cert")).encode())
        token = self._from_token(context)
        if token is not None:
            return token
        if self.anonymous_role is not None:
            return Caller(ANONYMOUS, self.anonymous_role)
        raise Refused("no client certificate and no token")

    def _from_certificate(self, context: aio.ServicerContext, identity: str,
                          pem: bytes) -> Caller:
        revoked = self.deny.refusal(identity, pem)
        if revoked:
            raise Refused(f"the certificate of {identity} is revoked ({revoked})", identity)
        role = self.roles.role_of(identity) or ""
        if role != Role.COORDINATOR:
            return Caller(identity, role)
        metadata = dict(context.invocation_metadata() or ())
        forwarded = metadata.get(FORWARD_IDENTITY)
        if not isinstance(forwarded, str) or not forwarded:
            return Caller(identity, role)
        forwarded_role = metadata.get(FORWARD_ROLE)
        known = forwarded_role in {r.value for r in Role}
        return Caller(forwarded[:200], str(forwarded_role) if known else "", via=identity)

    def _from_token(self, context: aio.ServicerContext) -> Caller | None:
        for key, value in context.invocation_metadata() or ():
            if key != "authorization" or not isinstance(value, str):
                continue
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer":
                continue
            for known, (name, role) in self.tokens.items():
                if hmac.compare_digest(known.encode(), token.strip().encode()):
                    identity = f"token/{name}"
                    return Caller(identity, role or self.roles.role_of(identity) or "")
        return None


def _code(context: aio.ServicerContext, failed: bool) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    return "UNKNOWN" if failed else "OK"


def _decode(method: str, raw: bytes) -> Message | None:
    cls = request_class(method)
    if cls is None or not isinstance(raw, bytes):
        return None
    try:
        return cls.FromString(raw)
    except (DecodeError, ValueError):
        return None


class _Call:
    """One call's authorization and audit line."""

    def __init__(self, policy: AuthPolicy, method: str, raw: bytes,
                 context: aio.ServicerContext) -> None:
        self.policy, self.method, self.raw, self.context = policy, method, raw, context
        self.caller: Caller | None = None
        # Read once, while the call surely lives: peer() goes into grpc's core call,
        # and the audit line in `done` may come after a client cancelled a stream.
        # (cygnetd twice died of a NULL dereference in cygrpc at such a moment; this
        # is the one core call that line made.)
        self.peer = context.peer()

    def record(self, outcome: str, reason: str = "", claimed: str = "") -> None:
        request = _decode(self.method, self.raw)
        caller = self.caller
        entry: dict[str, Any] = {
            "identity": caller.identity if caller else claimed,
            "role": caller.role if caller else "",
            "method": self.method,
            "target": target_of(request),
            "request_id": request_id_of(request),
            "outcome": outcome,
            "peer": self.peer,
        }
        if caller is not None and caller.via:
            entry["via"] = caller.via
        if reason:
            entry["reason"] = reason
        self.policy.audit.write(entry)

    async def admit(self) -> None:
        """Sets CALLER, or ends the call with UNAUTHENTICATED or PERMISSION_DENIED."""
        try:
            self.caller = self.policy.identify(self.context)
        except Refused as exc:
            log.warning("refused %s from %s: %s", self.method, self.peer, exc)
            self.record("UNAUTHENTICATED", str(exc), exc.identity)
            await self.context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                     f"the daemon refused this client: {exc}")
        caller = self.caller
        assert caller is not None
        CALLER.set(caller)
        if not allowed(caller.role, self.method):
            role = caller.role or "no role"
            why = (f"{caller.identity} ({role}) may not call "
                   f"{self.method.rsplit('/', 1)[-1]}")
            log.warning("refused %s from %s: %s", self.method, self.peer, why)
            self.record("PERMISSION_DENIED", why)
            hint = "" if caller.role else " (give this identity a role in the roles setting)"
            await self.context.abort(grpc.StatusCode.PERMISSION_DENIED, why + hint)

    def done(self, failed: bool) -> None:
        if audited(self.method):
            self.record(_code(self.context, failed))


class AuthInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates, authorizes and audits every call; health and reflection stay open.

    Sits outside ErrorInterceptor, so a refused request is never handed to a servicer.
    """

    def __init__(self, policy: AuthPolicy) -> None:
        self.policy = policy

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        if handler.unary_unary is not None:
            return self._unary(handler, details.method)
        if handler.unary_stream is not None:
            return self._stream(handler, details.method)
        if handler.stream_stream is not None:
            return self._bidi(handler, details.method)
        return handler  # no client-streaming methods exist

    def _unary(self, handler: Any, method: str) -> Any:
        inner, policy = handler.unary_unary, self.policy

        async def wrapped(raw: bytes, context: aio.ServicerContext) -> Any:
            call = _Call(policy, method, raw, context)
            await call.admit()
            failed = True
            try:
                result = await inner(raw, context)
                failed = False
                return result
            finally:
                call.done(failed)

        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def _stream(self, handler: Any, method: str) -> Any:
        inner, policy = handler.unary_stream, self.policy

        async def wrapped(raw: bytes, context: aio.ServicerContext) -> AsyncIterator[Any]:
            call = _Call(policy, method, raw, context)
            await call.admit()
            failed = True
            try:
                async for event in inner(raw, context):
                    yield event
                failed = False
            finally:
                call.done(failed)

        return grpc.unary_stream_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


    def _bidi(self, handler: Any, method: str) -> Any:
        """A bidi stream is authenticated once, when it opens (the TLS identity is the
        stream's); the servicer checks each message against CALLER."""
        inner, policy = handler.stream_stream, self.policy

        async def wrapped(requests: AsyncIterator[Any],
                          context: aio.ServicerContext) -> AsyncIterator[Any]:
            call = _Call(policy, method, b"", context)
            await call.admit()
            failed = True
            try:
                async for reply in inner(_still_trusted(call, requests), context):
                    yield reply
                failed = False
            finally:
                call.done(failed)

        return grpc.stream_stream_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


async def _still_trusted(call: _Call, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A long-lived stream's messages: each is refused once its certificate is revoked,
    as a new call would be (the deny list is re-read when its file changes)."""
    auth = call.context.auth_context() or {}
    pem = _first(auth.get("x509_pem_cert")).encode()
    # The certificate's own identity (a forwarded call names another caller).
    identity = (call.caller.via or call.caller.identity) if call.caller else ""
    async for request in requests:
        revoked = call.policy.deny.refusal(identity, pem) if pem else None
        if revoked:
            why = f"the certificate of {identity} is revoked ({revoked})"
            log.warning("refused %s from %s: %s", call.method, call.peer, why)
            call.record("UNAUTHENTICATED", why)
            await call.context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                     f"the daemon refused this client: {why}")
        yield request


class ForwardCaller(aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """On the coordinator's calls to agents: names the caller it acts for, so the
    agent's audit log shows who asked (the agent trusts this only from a
    coordinator certificate)."""

    async def intercept_unary_unary(self, continuation: Callable[..., Any],
                                    details: aio.ClientCallDetails, request: Any) -> Any:
        caller = CALLER.get()
        if caller is not None:
            metadata = aio.Metadata(*(details.metadata or ()))
            metadata.add(FORWARD_IDENTITY, caller.identity)
            metadata.add(FORWARD_ROLE, caller.role)
            details = aio.ClientCallDetails(details.method, details.timeout, metadata,
                                            details.credentials, details.wait_for_ready)
        return await continuation(details, request)
