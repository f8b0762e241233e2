"""When a move stops copying while the database serves: catch-up rounds go on while
each moves much and clearly less than the one before, and never more than
MAX_CATCHUP of them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cygnet.agent.moves import CATCHUP_ENOUGH, CATCHUP_SHRINK, MAX_CATCHUP, another_catchup

MB = 2**20


def _rounds(sizes: list[int]) -> int:
    """How many catch-up rounds run when round i would move sizes[i] (sizes[0]: the full)."""
    n, before, moved = 0, float("inf"), float(sizes[0])
    while another_catchup(n, before, moved):
        n += 1
        before, moved = moved, float(sizes[min(n, len(sizes) - 1)])
    return n


def test_rounds_that_still_shrink_go_on_past_four() -> None:
    # A 4 GB move under writes: each round a third of the one before.
    assert _rounds([4096 * MB, 1400 * MB, 470 * MB, 160 * MB, 54 * MB, 40 * MB, 20 * MB]) == 6


def test_a_round_that_moved_little_is_the_last() -> None:
    assert _rounds([2048 * MB, 300 * MB, 20 * MB, 10 * MB]) == 2
    assert _rounds([10 * MB]) == 0


def test_rounds_that_stop_shrinking_stop() -> None:
    # 128K records under random writes: every round re-sends most of the table.
    assert _rounds([2048 * MB, 900 * MB, 950 * MB, 900 * MB]) == 2


@given(st.lists(st.integers(0, 8 * 2**30), min_size=1, max_size=20))
def test_rounds_are_bounded_and_each_one_run_was_worth_it(sizes: list[int]) -> None:
    n = _rounds(sizes)
    assert n <= MAX_CATCHUP
    for i in range(1, n):  # round i ran after round i-1 moved much and shrank
        assert sizes[min(i, len(sizes) - 1)] >= CATCHUP_ENOUGH
        assert sizes[min(i, len(sizes) - 1)] <= sizes[i - 1] * CATCHUP_SHRINK
