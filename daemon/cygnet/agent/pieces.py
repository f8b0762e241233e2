"""Whole files in a server stream: cut into pieces of at most 1 MiB (well under
gRPC's 4 MiB message limit), each file's pieces one after the other, its last
marked; and put back together on the other side."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Protocol, TypeVar

CHUNK = 1 << 20


class Piece(Protocol):
    data: bytes
    last: bool


Message = TypeVar("Message", bound=Piece)


def cut(data: bytes) -> Iterator[tuple[bytes, bool]]:
    """(piece, last) for each piece of `data` (an empty file is one empty piece)."""
    for offset in range(0, max(len(data), 1), CHUNK):
        yield data[offset:offset + CHUNK], offset + CHUNK >= len(data)


async def joined(stream: AsyncIterator[Message], name: Callable[[Message], str]
                 ) -> AsyncIterator[tuple[bytes, Message]]:
    """Each whole file, with the message of its last piece. ValueError when a file's
    pieces are cut off by another's."""
    parts: list[bytes] = []
    current = ""
    async for message in stream:
        if parts and name(message) != current:
            raise ValueError(f"the source's stream broke off {current[:80]!r}")
        current = name(message)
        parts.append(message.data)
        if message.last:
            yield b"".join(parts), message
            parts = []
