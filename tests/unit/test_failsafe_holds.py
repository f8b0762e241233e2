"""The replica side of failsafe mode (agent/failsafe.py): a replica either holds off a
failover for a primary that confirmed itself, or has granted a failover and confirms
no more; never both. Hypothesis drives the calls and the clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cygnet.agent.failsafe import Holds
from cygnet.errors import FailedPrecondition

S = 1_000_000_000  # ns


def test_a_confirmed_primary_holds_off_a_failover_until_the_hold_ends(tmp_path: Path) -> None:
    holds = Holds(tmp_path)
    holds.confirm("db", "h1", 6.0, now=10 * S)
    with pytest.raises(FailedPrecondition, match="h1 confirmed itself"):
        holds.prepare_failover("db", 12.0, now=15 * S)
    holds.prepare_failover("db", 12.0, now=16 * S)
    with pytest.raises(FailedPrecondition, match="failover to this replica is under way"):
        holds.confirm("db", "h1", 6.0, now=20 * S)
    # Another agent process (a restart) refuses the same.
    with pytest.raises(FailedPrecondition):
        Holds(tmp_path).confirm("db", "h1", 6.0, now=27 * S)
    holds.confirm("db", "h1", 6.0, now=28 * S)  # the granted window ended


def test_a_promotion_ends_the_failover_window(tmp_path: Path) -> None:
    holds = Holds(tmp_path)
    holds.prepare_failover("db", 60.0, now=S)
    holds.promoted("db")
    holds.confirm("db", "h2", 6.0, now=2 * S)
    assert Holds(tmp_path).holds["db"].primary_host == "h2"
    holds.confirm("other", "h2", 6.0, now=2 * S)  # databases are independent


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["confirm", "failover", "promoted"]),
                          st.integers(0, 20 * S), st.floats(0.1, 10.0)), max_size=30))
def test_never_both_confirmed_and_failing_over(calls: list[tuple[str, int, float]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        holds, now = Holds(Path(tmp)), 0
        confirmed_until = granted_until = 0  # the model
        for verb, step, seconds in calls:
            now += step
            try:
                if verb == "confirm":
                    holds.confirm("db", "h1", seconds, now)
                    assert granted_until <= now, "confirmed during a granted failover"
                    confirmed_until = max(confirmed_until, now + int(seconds * S))
                elif verb == "failover":
                    holds.prepare_failover("db", seconds, now)
                    assert confirmed_until <= now, "failover granted during a hold"
                    granted_until = max(granted_until, now + int(seconds * S))
                else:
                    holds.promoted("db")
                    confirmed_until = granted_until = 0
            except FailedPrecondition:
                assert (verb == "confirm" and granted_until > now) or \
                    (verb == "failover" and confirmed_until > now)
