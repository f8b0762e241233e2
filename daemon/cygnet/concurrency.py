"""Running coroutines side by side, a bounded number at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def bounded(limit: int, coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """The results of `coros` in order, at most `limit` running at once. The first
    failure cancels the others and is raised (an ExceptionGroup's first error)."""
    gate = asyncio.Semaphore(max(1, limit))

    async def gated(coro: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await coro

    pending = list(coros)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(gated(c)) for c in pending]
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    return [t.result() for t in tasks]
