"""cygnet.concurrency.bounded: order, the limit, and a failure that stops the rest."""

from __future__ import annotations

import asyncio

import pytest

from cygnet.concurrency import bounded


def test_results_keep_their_order_and_the_limit_holds() -> None:
    running, peak = 0, 0

    async def job(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01 * (5 - i % 5))
        running -= 1
        return i * i

    assert asyncio.run(bounded(3, (job(i) for i in range(10)))) == [i * i for i in range(10)]
    assert peak == 3


def test_the_first_failure_is_raised_as_itself_and_cancels_the_others() -> None:
    finished: list[int] = []

    async def job(i: int) -> int:
        if i == 1:
            raise KeyError("broken")
        await asyncio.sleep(0.5)
        finished.append(i)
        return i

    with pytest.raises(KeyError, match="broken"):
        asyncio.run(bounded(4, (job(i) for i in range(4))))
    assert finished == []


def test_nothing_to_run() -> None:
    assert asyncio.run(bounded(2, iter([]))) == []
