"""Durations for TTLs and protection leases: what parses, and the errors that name the field."""

from __future__ import annotations

import pytest

from cygnet.durations import BadDuration, format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
    ("1d12h", 129600), ("1h30m", 5400), (" 7D ", 604800), ("0d1s", 1),
])
def test_parses(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "why"), [
    ("0", "not a duration"), ("0d", "zero"), ("0h0m", "zero"), ("-1d", "negative"),
    ("-5m", "negative"), ("7", "not a duration"), ("d", "not a duration"),
    ("1.5h", "not a duration"), ("7days", "not a duration"), ("", "not a duration"),
    ("1d 2x", "not a duration"), ("h1", "not a duration"),
])
def test_refuses_naming_the_field(text: str, why: str) -> None:
    with pytest.raises(BadDuration) as info:
        parse_duration(text, "--ttl")
    assert str(info.value).startswith("--ttl: ")
    assert why in str(info.value)
    assert info.value.field == "--ttl"


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "0s"), (12, "12s"), (2700, "45m"), (90061, "1d1h"), (604799, "6d23h"), (-5, "0s"),
])
def test_formats(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown
