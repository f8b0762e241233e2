"""Cron expressions of backup schedules, parsed and iterated by croniter.

Five fields (minute hour day-of-month month day-of-week) in UTC, as crontab(5);
croniter's optional sixth field is seconds, which lets tests fire every few
seconds. Times are unix floats, so callers never handle time zones.
"""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import CroniterError, croniter

from cygnet.errors import InvalidArgument

MAX_LENGTH = 200


def check(field: str, expression: str) -> str:
    """The expression, or InvalidArgument naming `field` (empty means "off" and passes)."""
    if not expression:
        return expression
    if len(expression) > MAX_LENGTH or not expression.isprintable():
        raise InvalidArgument(field, f"not a cron expression (at most {MAX_LENGTH} "
                                     "printable characters)")
    if len(expression.split()) not in (5, 6):
        raise InvalidArgument(field, f"{expression!r} is not a cron expression: give 5 fields "
                                     "(minute hour day month weekday), e.g. '0 3 * * *'")
    try:
        croniter(expression, datetime.now(UTC)).get_next(float)
    except (CroniterError, ValueError, KeyError) as exc:
        raise InvalidArgument(field, f"{expression!r} is not a cron expression: {exc}") from None
    return expression


def next_after(expression: str, after: float) -> float:
    """The first time the expression matches strictly after `after` (UTC)."""
    start = datetime.fromtimestamp(after, UTC)
    return float(croniter(expression, start).get_next(float))
