"""The endpoint's relay process: moves the bytes of routed connections, outliving cygnetd.

cygnetd routes each endpoint connection (server.py), then sends the client's
socket and the branch's socket here over a unix SEQPACKET socket, as
SCM_RIGHTS ancillary data. From then on the C relay (native/relay_core.c) in
this process moves their bytes, so a cygnetd restart or upgrade cuts none of
them: the new cygnetd connects to the same socket and goes on handing over.

Messages on the control socket, one per datagram:
- b"A" with two descriptors: relay them (client, branch);
- b"S": answered with the relay's counters, four little-endian u64
  (active, total, bytes client->branch, bytes branch->client);
- b"K" with the endpoint's listening sockets: keep copies of them (cygnetd
  sends them once it listens, and again when it stops), so that while no
  cygnetd runs, even after a kill -9, clients that connect wait in the
  kernel's accept queue instead of being refused;
- b"G": answered with b"G" and the kept listening sockets, which the
  relay then lets go (the next cygnetd accepts on them);
- b"T" with one descriptor, and the route link's messages: clients routed by
  `options=endpoint=`, whose TLS this process terminates (route_link.py);
- b"O": answered with how many of those it relays now, one little-endian u64.

Only a peer with this process's uid may connect. The process exits once no
cygnetd has been connected and nothing has been relayed for `--linger`
seconds, or at once when its socket file was removed or replaced and nothing
is relayed.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import struct
import sys
import time
from pathlib import Path

from cygnet.endpoint import route_link as R
from cygnet.endpoint.terminate import relaying

log = logging.getLogger("cygnet.endpoint.relay")

OP_ADD = b"A"
OP_STATS = b"S"
OP_OPTIONS = b"O"
OP_KEEP = b"K"
OP_GIVE = b"G"
MAX_LISTENERS = 16
STATS = struct.Struct("<4Q")
COUNT = struct.Struct("<Q")
FDS_SIZE = socket.CMSG_SPACE(MAX_LISTENERS * array.array("i").itemsize)
TICK = 1.0


def raise_fd_limit() -> None:
    """Each relayed connection holds two descriptors: take what the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the descriptor limit from %d: %s", soft, exc)


def received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return list(fds)


def dial(path: Path, timeout: float = 2.0) -> socket.socket | None:
    """A connection to the relay serving `path`, or None if none answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        return sock
    except OSError:
        sock.close()
        return None


def peer_ids(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


def _listen(path: Path) -> socket.socket:
    """Binds `path` (a stale file goes); 0600, so only this uid can connect."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(8)
    listener.setblocking(False)
    return listener


class RelayProcess:
    def __init__(self, path: Path, linger: float) -> None:
        from cygnet import _native

        self.native = _native
        self.path, self.linger = path, linger
        self.listener = _listen(path)
        self.inode = os.stat(path).st_ino
        self.peers: set[socket.socket] = set()
        self.kept: list[int] = []  # the endpoint's listening sockets, between two cygnetd
        self.routes = R.RouteAsker()  # options=endpoint= clients, TLS terminated here
        self.stop = False

    def _accept(self) -> None:
        try:
            peer, _ = self.listener.accept()
        except BlockingIOError:
            return
        _, uid, _ = peer_ids(peer)
        if uid != os.getuid():
            log.warning("relay: refused a peer with uid %d", uid)
            peer.close()
            return
        peer.setblocking(False)
        self.peers.add(peer)
        asyncio.get_running_loop().add_reader(peer, self._message, peer)

    def _drop(self, peer: socket.socket) -> None:
        asyncio.get_running_loop().remove_reader(peer)
        self.peers.discard(peer)
        self.routes.detach(peer)
        peer.close()

    def _message(self, peer: socket.socket) -> None:
        try:
            data, ancdata, _, _ = peer.recvmsg(R.MAX_MESSAGE, FDS_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self._drop(peer)
            return
        fds = received_fds(ancdata)
        if not data:
            for fd in fds:
                os.close(fd)
            self._drop(peer)
            return
        if data[:1] == OP_ADD and len(fds) == 2:
            try:
                self.native.relay_add(fds[0], fds[1])
            except OSError as exc:
                log.error("relay: a connection could not be relayed: %s", exc)
                for fd in fds:
                    os.close(fd)
            return
        if data[:1] == OP_KEEP:
            self._let_go()
            self.kept = fds
            return
        if data[:1] == R.OP_TERMINATE and len(fds) == 1:
            self.routes.terminate(socket.socket(fileno=fds[0]))
            return
        for fd in fds:  # anything else carries no descriptor of use
            os.close(fd)
        if data[:1] == OP_STATS:
            with contextlib.suppress(OSError):
                peer.send(STATS.pack(*self.native.relay_stats()))
        elif data[:1] == OP_OPTIONS:
            with contextlib.suppress(OSError):
                peer.send(COUNT.pack(relaying()))
        elif data[:1] == OP_GIVE:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                    array.array("i", self.kept).tobytes())] if self.kept else []
            with contextlib.suppress(OSError):
                peer.sendmsg([OP_GIVE], anc)
            self._let_go()
        elif data[:1] == R.OP_ROUTER:
            self.routes.attach(peer, R.decode(data)[1])
        elif data[:1] == R.OP_ANSWER:
            self.routes.answer(R.decode(data)[1])

    def _let_go(self) -> None:
        for fd in self.kept:
            os.close(fd)
        self.kept = []

    def _replaced(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self.inode
        except FileNotFoundError:
            return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.listener, self._accept)
        loop.add_signal_handler(signal.SIGTERM, lambda: setattr(self, "stop", True))
        idle_since = time.monotonic()
        while not self.stop:
            await asyncio.sleep(TICK)
            active = self.native.relay_stats()[0] + len(self.routes.sessions)
            if self.peers or active:
                idle_since = time.monotonic()
            elif self._replaced() or time.monotonic() - idle_since >= self.linger:
                break
        if not self._replaced():
            with contextlib.suppress(OSError):
                self.path.unlink()
        log.info("relay: exits (%d connections relayed)", self.native.relay_stats()[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cygnet-endpoint-relay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", type=Path, required=True, help="the control socket")
    p.add_argument("--linger", type=float, default=30.0,
                   help="seconds to wait for a cygnetd once nothing is relayed")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="cygnet-endpoint-relay: %(message)s")
    probe = dial(args.socket, timeout=1.0)
    if probe is not None:
        probe.close()
        return 0  # another relay serves this socket: cygnetd connects to it
    raise_fd_limit()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C to cygnetd is not ours
    asyncio.run(_serve(args.socket, args.linger))
    return 0


async def _serve(path: Path, linger: float) -> None:
    await RelayProcess(path, linger).run()


if __name__ == "__main__":
    sys.exit(main())
