"""Handing a routed client's TCP socket to a branch's own postmaster.

Every postmaster Cygnet starts loads native/handoff/cygnet_handoff.c with
LD_PRELOAD and listens on a second unix socket, in SOCKET_DIR/handoff. The
host endpoint connects there and sends the client's socket (SCM_RIGHTS) with
the bytes it already read to route it; the postmaster accepts the client as
if it had come to its own TCP port. From then on the client talks to its
backend directly: no relay and no copy in the data path (docs/endpoints.md).

The answer is one byte, 'K', once the postmaster took the socket. A closed
connection without it means it did not (a postmaster without the library
reads the message as an impossible startup packet): the caller relays
instead. No answer in time means nobody knows, so the client is not served
twice: the caller drops it (the library sends 'K' before it keeps the socket,
and a 'K' to a closed connection fails, so it drops it too).
"""

from __future__ import annotations

import array
import asyncio
import logging
import socket
from enum import Enum
from pathlib import Path

import cygnet
from cygnet.postgres.layout import MAX_SOCKET_DIR_LEN

log = logging.getLogger("cygnet.postgres")

LIBRARY = Path(cygnet.__file__).parent / "lib" / "cygnet_handoff.so"
DIR_NAME = "handoff"  # the library knows its listener by this directory name
MAGIC = b"CYGH"  # read as a startup packet length, 0x43594748: impossible
MAX_PREFIX = 64
ANSWER_TIMEOUT = 10.0


class Handoff(Enum):
    TAKEN = "taken"  # the branch's postmaster serves the client now
    REFUSED = "refused"  # nothing taken: the caller still owns the client
    LOST = "lost"  # unknown: the caller must drop the client


def handoff_dir(socket_dir: Path) -> Path | None:
    """The handoff listener's directory, or None where its socket path would be too long."""
    path = socket_dir / DIR_NAME
    return path if len(str(path)) <= MAX_SOCKET_DIR_LEN else None


def socket_dirs(socket_dir: Path) -> list[Path]:
    """A cluster's unix_socket_directories: its own, then the handoff listener's."""
    extra = handoff_dir(socket_dir)
    return [socket_dir] if extra is None else [socket_dir, extra]


def socket_path(socket_dir: Path, port: int) -> Path | None:
    where = handoff_dir(socket_dir)
    return where / f".s.PGSQL.{port}" if where is not None else None


def preload_env() -> dict[str, str]:
    """The postmaster's LD_PRELOAD, when the library is built (it is inert until used)."""
    return {"LD_PRELOAD": str(LIBRARY)} if LIBRARY.is_file() else {}


def message(prefix: bytes, swallow: int) -> bytes:
    """What the library reads: magic, bytes of answers to swallow, the prefix."""
    if len(prefix) > MAX_PREFIX or not 0 <= swallow <= 255:
        raise ValueError("a handoff prefix is at most 64 bytes, a swallow at most 255")
    return MAGIC + bytes([swallow, len(prefix)]) + prefix


async def hand_over(path: Path, client: socket.socket, prefix: bytes, swallow: int
                    ) -> Handoff:
    """Gives `client` to the postmaster listening at `path`.

    `prefix` is what the client sent that Postgres must still read (its
    SSLRequest); `swallow` how many bytes of Postgres' answers the client
    already had from the endpoint (the 'S').
    """
    loop = asyncio.get_running_loop()
    fds = array.array("i", [client.fileno()]).tobytes()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as link:
        link.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(link, str(path)), ANSWER_TIMEOUT)
            link.sendmsg([message(prefix, swallow)],
                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except (OSError, TimeoutError) as exc:  # nothing was sent
            log.debug("handoff to %s: %s", path, exc)
            return Handoff.REFUSED
        try:
            answer = await asyncio.wait_for(loop.sock_recv(link, 1), ANSWER_TIMEOUT)
        except ConnectionResetError:  # closed unread: the socket went with it
            return Handoff.REFUSED
        except (OSError, TimeoutError) as exc:
            log.warning("handoff to %s: no answer (%s); the client is dropped", path,
                        exc or "timed out")
            return Handoff.LOST
    return Handoff.TAKEN if answer == b"K" else Handoff.REFUSED
