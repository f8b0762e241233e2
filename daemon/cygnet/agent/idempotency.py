"""Request ids: a retried mutating call returns the first call's outcome.

Failures are outcomes too: a retry gets the first failure without running the
operation again (a failed create must not snapshot, clone and start three
times). Only a call cut short by cancellation (the daemon stopping) is
forgotten, as it never finished. In memory, bounded. Creates also record their request id in ZFS
(`cygnet:request`), so a retry after a daemon restart still finds the first
result (see service.py).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cygnet.errors import InvalidArgument
from cygnet.names import MAX_REQUEST_ID_LENGTH

T = TypeVar("T")


@dataclass
class _Entry:
    method: str
    future: asyncio.Future[Any]


class RequestLog:
    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    async def run(self, request_id: str, method: str, call: Callable[[], Awaitable[T]]) -> T:
        if not request_id:
            return await call()
        if len(request_id) > MAX_REQUEST_ID_LENGTH:
            raise InvalidArgument("request_id",
                                  f"must be at most {MAX_REQUEST_ID_LENGTH} characters")
        entry = self._entries.get(request_id)
        if entry is not None:
            if entry.method != method:
                raise InvalidArgument("request_id", f"was already used for {entry.method}")
            result: T = await asyncio.shield(entry.future)
            return result
        future: asyncio.Future[T] = asyncio.ensure_future(call())
        self._entries[request_id] = _Entry(method, future)
        future.add_done_callback(lambda f: self._forget_if_cancelled(request_id, f))
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        # Shielded: a caller that gives up does not cancel the work; its retry joins it.
        return await asyncio.shield(future)

    def _forget_if_cancelled(self, request_id: str, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._entries.pop(request_id, None)
        else:
            future.exception()  # retrieved: a failure is kept as the answer, not "never seen"
