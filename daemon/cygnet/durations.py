"""Durations as people write them: 90s, 30m, 12h, 7d, 2w, or combined (1d12h).

Used by the CLI for TTLs and protection leases; imports nothing heavy.
"""

from __future__ import annotations

import re

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)([smhdw])")


class BadDuration(ValueError):
    """`field` names the option or field; the message says what is accepted."""

    def __init__(self, field: str, text: str, why: str) -> None:
        super().__init__(f"{field}: {text!r} {why}")
        self.field = field
        self.reason = f"{text!r} {why}"


def parse_duration(text: str, field: str = "ttl") -> int:
    """Seconds in `text`; zero, negative or unparseable raise BadDuration naming `field`."""
    value = text.strip().lower().replace(" ", "")
    if value.startswith("-"):
        raise BadDuration(field, text, "is negative: give a positive duration such as 7d")
    parts = _PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise BadDuration(field, text, "is not a duration such as 90s, 30m, 12h, 7d, 2w "
                                       "or 1d12h")
    seconds = sum(int(n) * UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise BadDuration(field, text, "is zero: give a positive duration such as 7d")
    return seconds


def format_duration(seconds: float) -> str:
    """The largest two units, rounded down: 6d23h, 45m, 12s."""
    left = max(0, int(seconds))
    out: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not out):
            out.append(f"{left // size}{unit}")
            left %= size
        if len(out) == 2:
            break
    return "".join(out)
