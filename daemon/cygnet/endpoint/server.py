"""The endpoint's listener: negotiates, routes, and hands routed connections to the C relay.

Per connection: SSLRequest (answered 'S'; GSSENCRequest is answered 'N'
first) or a direct TLS ClientHello; the ClientHello is peeked at, not read.
With an endpoint name in its SNI, the client's socket itself goes to the
branch's postmaster (postgres/handoff.py), which answers the ClientHello:
TLS and SCRAM run end to end, channel binding included, and no relay is
left in the data path. A postmaster that cannot take it (one started before
the handoff existed) gets a TCP connection and an SSLRequest of its own,
and the bytes move in C (native/relay_core.c). A client without SNI goes to the relay process,
which terminates its TLS and asks cygnetd for the route (route_link.py).
Everything else (unknown names, plain TCP) is answered by the endpoint
itself (terminate.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from cygnet.agent import layout as L
from cygnet.endpoint import metrics
from cygnet.endpoint import protocol as P
from cygnet.endpoint.names import name_in_host
from cygnet.endpoint.protocol import Unroutable
from cygnet.endpoint.relay_link import ProcessRelay, Relay, open_relay
from cygnet.endpoint.relayd import raise_fd_limit
from cygnet.endpoint.route_link import RouteAnswerer
from cygnet.endpoint.router import Router, Target
from cygnet.endpoint.terminate import Terminator, relaying, tls_context
from cygnet.endpoint.wire import (
    close_gently,
    dial_tls_backend,
    guarded,
    peek_byte,
    peek_hello,
    recv_exact,
    tune,
)
from cygnet.postgres.handoff import Handoff, hand_over, socket_path

if TYPE_CHECKING:
    from cygnet.agent.config import AgentConfig
    from cygnet.agent.service import AgentService

log = logging.getLogger("cygnet.endpoint")

# A client must have said what it wants within this time (not counting a wake).
STARTUP_TIMEOUT = 30.0
_TLS_RECORD = 0x16


class Endpoint:
    def __init__(self, service: AgentService, config: AgentConfig) -> None:
        tls = service.host.clusters.tls
        self.domain = config.endpoint_domain
        self.router = Router(service, backend_address(service.host.clusters.listen_addresses))
        self.terminator = Terminator(self._resolve, self.router.address,
                                     tls_context(tls.cert, tls.key, tls.ca), metrics.refused)
        self.tls_files = {"cert": str(tls.cert), "key": str(tls.key),
                          "ca": str(tls.ca) if tls.ca else "", "backend": self.router.address}
        self.routes: RouteAnswerer | None = None  # the relay process terminates options=
        self.addresses = _addresses(config)
        self.port = config.endpoint_port
        self._listeners: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.relay_kind, self.run_dir = config.endpoint_relay, config.run_dir
        self.relay_linger = config.endpoint_relay_linger
        self.relay: Relay | None = None
        self.handoff = config.endpoint_handoff

    async def start(self) -> None:
        raise_fd_limit()
        # The relay before the first accept: no connection waits for it. The last
        # cygnetd may have left it the listening sockets, with clients waiting.
        self.relay = await asyncio.to_thread(open_relay, self.relay_kind, self.run_dir,
                                             self.relay_linger)
        kept = await asyncio.to_thread(self.relay.take_listeners)
        wanted = [(address, _kept_listener(kept, address, self.port))
                  for address in self.addresses]
        for extra in kept:  # not wanted any more (the addresses changed)
            extra.close()
        await self._link_routes()
        for address, listener in wanted:
            self._listeners.append(listener or _listen(address, self.port))
        for listener in self._listeners:
            self._accepting.append(asyncio.create_task(self._accept_loop(listener)))
        # The relay holds copies from now on, so even a cygnetd killed with -9
        # leaves the sockets listening: clients wait for the next one.
        await self._leave_listeners_with_relay()
        metrics.use_relay(self.relay, self._options_active)
        log.info("Postgres endpoint on %s port %d%s", ", ".join(self.addresses), self.port,
                 f", names *.{self.domain}" if self.domain else " (options=endpoint=NAME)")

    async def stop(self) -> None:
        for task in [*self._accepting, *self._tasks]:
            task.cancel()
        if self.routes is not None:
            await self.routes.close()
        await self._leave_listeners_with_relay()
        for listener in self._listeners:
            listener.close()
        metrics.use_relay(None)
        if self.relay is not None:  # a relay process goes on with its connections
            self.relay.close()

    async def _link_routes(self) -> None:
        """The relay process terminates options= clients, asking this cygnetd for routes."""
        if not isinstance(self.relay, ProcessRelay):
            return
        routes = RouteAnswerer(self.relay.path, self.tls_files, self._resolve,
                               metrics.refused)
        if await routes.start():
            self.routes = routes
        else:
            log.warning("endpoint: the relay process does not terminate TLS (it predates "
                        "this cygnetd); options=endpoint= connections stay in cygnetd, and "
                        "a restart cuts them, until it exits")

    def _options_active(self) -> int:
        """options= sessions relayed now: here, and in the relay process if it
        terminates them (a scrape's thread asks it)."""
        here = relaying()
        if self.routes is None:
            return here
        assert isinstance(self.relay, ProcessRelay)  # the only kind with a route link
        try:
            return here + self.relay.options_relaying()
        except OSError:
            return here

    async def _resolve(self, name: str) -> int:
        target = await self.router.target(name)
        metrics.terminated()
        return target.port

    async def _leave_listeners_with_relay(self) -> None:
        """Clients that connect until the next cygnetd wait in the accept queue
        of the copies the relay keeps, instead of being refused."""
        if self.relay is None or not self._listeners:
            return
        try:
            await asyncio.to_thread(self.relay.keep_listeners, self._listeners)
        except OSError as exc:
            log.warning("endpoint: the relay cannot keep the listening sockets: %s", exc)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and the like: wait, do not spin
                log.warning("endpoint accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            sock.setblocking(False)
            task = asyncio.create_task(self._serve(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket) -> None:
        await guarded(sock, self.handle(sock), "endpoint connection")

    async def handle(self, sock: socket.socket) -> None:
        tune(sock)
        async with asyncio.timeout(STARTUP_TIMEOUT):
            unread = await self._negotiate(sock)
            if unread is None:
                return
            hello = await peek_hello(sock)
        name = name_in_host(hello.server_name, self.domain)
        if name is None:
            if self.routes is not None and self.routes.connected:
                assert isinstance(self.relay, ProcessRelay)
                try:
                    await asyncio.to_thread(self.relay.hand_over_tls, sock)
                    return
                except OSError as exc:  # the client's socket is still ours
                    log.warning("endpoint: the relay process took no options= client (%s); "
                                "serving it here", exc)
            await self.terminator.serve(sock, None)
            return
        try:
            target = await self.router.target(name)
            if self.handoff and await self._handed_over(sock, target, unread):
                return
            backend = await dial_tls_backend(self.router.address, target.port)
        except Unroutable as exc:
            await self.terminator.serve(sock, exc)
            return
        except OSError as exc:
            await self.terminator.serve(sock, Unroutable(
                P.CANNOT_CONNECT_NOW, f"endpoint {name}: the branch cannot be reached: "
                f"{exc.strerror or exc}"))
            return
        assert self.relay is not None
        try:
            # A thread: a relay process that went away is started again meanwhile.
            await asyncio.to_thread(self.relay.add, sock, backend)
        except OSError:
            backend.close()
            raise
        log.debug("endpoint %s -> %s/%s on port %d", name, target.database, target.branch,
                  target.port)

    async def _handed_over(self, sock: socket.socket, target: Target, unread: bytes) -> bool:
        """True once the branch's postmaster has the client (or it was dropped: see
        postgres/handoff.py); False when the caller is to relay it."""
        path = socket_path(L.socket_dir(self.run_dir, target.branch_id), target.port)
        if path is None:
            return False
        # Postgres reads the SSLRequest the endpoint read, and its 'S' is not sent again.
        outcome = await hand_over(path, sock, unread, swallow=1 if unread else 0)
        if outcome is Handoff.REFUSED:
            return False
        sock.close()
        if outcome is Handoff.TAKEN:
            metrics.handed_off()
            log.debug("endpoint: handed to %s/%s on port %d", target.database, target.branch,
                      target.port)
        return True

    async def _negotiate(self, sock: socket.socket) -> bytes | None:
        """Once the client starts TLS, what it sent that its Postgres has not seen
        (its SSLRequest, or nothing before a direct ClientHello); None when it was
        answered otherwise."""
        loop = asyncio.get_running_loop()
        while True:
            first = await peek_byte(sock)
            if first[0] == _TLS_RECORD:  # sslnegotiation=direct: TLS at once
                return b""
            try:
                header = await recv_exact(sock, 8)
                length, code = P.request_header(header)
            except P.ProtocolError as exc:  # not Postgres' protocol: say so, in plain text
                metrics.refused(P.PROTOCOL_VIOLATION)
                await loop.sock_sendall(sock, P.error_response(P.PROTOCOL_VIOLATION, str(exc)))
                raise
            if code == P.GSSENC_REQUEST and length == 8:
                await loop.sock_sendall(sock, b"N")
                continue
            if code == P.SSL_REQUEST and length == 8:
                await loop.sock_sendall(sock, b"S")
                return header
            rest = await recv_exact(sock, length - 8)
            if code == P.CANCEL_REQUEST and length == 16:
                await self._cancel(rest)
                sock.close()
                return None
            metrics.refused(P.INVALID_AUTHORIZATION)
            await loop.sock_sendall(sock, P.error_response(
                P.INVALID_AUTHORIZATION, "the Cygnet endpoint accepts TLS connections only",
                hint="use sslmode=require or stricter (verify-full with the fleet CA)"))
            close_gently(sock)
            return None

    async def _cancel(self, rest: bytes) -> None:
        """Forwards a plain CancelRequest to the branch whose postmaster is the pid's parent."""
        pid = int.from_bytes(rest[:4], "big")
        port = self._port_of_backend(pid)
        if port is None:
            return
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.router.address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as out:
            out.setblocking(False)
            try:
                await loop.sock_connect(out, (self.router.address, port))
                await loop.sock_sendall(out, (16).to_bytes(4, "big")
                                        + P.CANCEL_REQUEST.to_bytes(4, "big") + rest[:8])
            except OSError as exc:
                log.debug("cancel not forwarded: %s", exc)

    def _port_of_backend(self, pid: int) -> int | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            cwd = Path(f"/proc/{parent}/cwd").resolve()
        except (OSError, ValueError, IndexError):
            return None
        clusters = self.router.service.host.clusters
        for db in self.router.service.host.known.values():
            for branch in db.branches.values():
                if branch.port and clusters.pgdata(branch) == cwd:
                    return branch.port
        return None


def _kept_listener(kept: list[socket.socket], address: str, port: int
                   ) -> socket.socket | None:
    """The kept listening socket bound to (address, port), taken out of `kept`."""
    for sock in kept:
        try:
            bound = sock.getsockname()
            same = ipaddress.ip_address(bound[0]) == ipaddress.ip_address(address)
        except (OSError, ValueError):
            continue
        if same and bound[1] == port:
            kept.remove(sock)
            sock.setblocking(False)
            return sock
    return None


def _listen(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        listener.listen(1024)
    except BaseException:
        listener.close()
        raise
    listener.setblocking(False)
    return listener


def backend_address(listen_addresses: str) -> str:
    """Where the endpoint dials the branches: the first address Postgres listens on."""
    first = listen_addresses.split(",")[0].strip()
    return {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
        first, first)


def _addresses(config: AgentConfig) -> list[str]:
    from cygnet.agent.pgtls import listen_addresses

    listen = config.endpoint_listen.strip() or listen_addresses(config)
    return [a.strip() for a in listen.split(",") if a.strip()]


async def start_endpoint(service: AgentService, config: AgentConfig) -> Endpoint | None:
    """The host's endpoint, or None when endpoint_port is 0 or its port is taken
    (logged: the API and the branches' own ports serve on without it)."""
    if not config.endpoint_port:
        return None
    endpoint = Endpoint(service, config)
    try:
        await endpoint.start()
    except OSError as exc:
        await endpoint.stop()
        log.error("the Postgres endpoint cannot listen on %s port %d: %s (endpoint_port, "
                  "endpoint_listen)", ", ".join(endpoint.addresses), endpoint.port,
                  exc.strerror or exc)
        return None
    return endpoint
