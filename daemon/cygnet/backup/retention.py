"""Retention by count and by age: which recovery points a policy keeps.

Pure functions over (id, time) pairs, no I/O: the scheduler applies them to
automatic snapshots and to scheduled backups alike. The rules are those
operators know from restic and pgBackRest, grandfather-father-son:

    keep_last N     the newest N points
    keep_hourly N   the newest point of each of the newest N hours that have one
    keep_daily N    ... of each of the newest N days (UTC)
    keep_weekly N   ... of each of the newest N ISO weeks
    keep_monthly N  ... of each of the newest N months
    keep_within S   every point younger than S seconds

A point is kept if any rule keeps it; the newest point is always kept, so a
policy can never delete everything. `pinned` points (a snapshot a branch was
cloned from, a backup another still needs) are kept whatever the rules say.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from cygnet.errors import InvalidArgument

# Counts above this are typos (a year of hourly points is 8,784).
MAX_KEEP = 100_000
MAX_WITHIN_S = 100 * 366 * 86400


@dataclass(frozen=True)
class Policy:
    """0 turns a rule off; at least one rule must be on (check())."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_within_s: int = 0

    def check(self, field_prefix: str = "") -> Policy:
        for f in fields(self):
            value = getattr(self, f.name)
            limit = MAX_WITHIN_S if f.name == "keep_within_s" else MAX_KEEP
            if not 0 <= value <= limit:
                raise InvalidArgument(field_prefix + f.name, f"{value} is not in 0..{limit}")
        if not any(getattr(self, f.name) for f in fields(self)):
            raise InvalidArgument(field_prefix + "retention",
                                  "keeps nothing: give at least one keep rule of 1 or more")
        return self

    def describe(self) -> str:
        parts = [f"{f.name.removeprefix('keep_').removesuffix('_s')}={getattr(self, f.name)}"
                 for f in fields(self) if getattr(self, f.name)]
        return ",".join(parts)

    @classmethod
    def parse(cls, text: str) -> Policy:
        """The inverse of describe() (what the ZFS property stores)."""
        values: dict[str, int] = {}
        names = {f.name.removeprefix("keep_").removesuffix("_s"): f.name for f in fields(cls)}
        for part in filter(None, text.split(",")):
            key, _, value = part.partition("=")
            if key not in names or not value.isdigit():
                raise ValueError(f"not a retention rule: {part!r}")
            values[names[key]] = int(value)
        return cls(**values)


@dataclass(frozen=True)
class Point:
    id: str
    at: float  # unix time


@dataclass(frozen=True)
class Decision:
    keep: list[Point]  # newest first
    drop: list[Point]  # newest first
    reasons: dict[str, list[str]]  # id -> the rules that keep it

    @property
    def oldest_kept(self) -> Point | None:
        return self.keep[-1] if self.keep else None


def _bucket(kind: str) -> Callable[[float], Hashable]:
    def key(at: float) -> Hashable:
        t = datetime.fromtimestamp(at, UTC)
        if kind == "hourly":
            return (t.year, t.month, t.day, t.hour)
        if kind == "daily":
            return (t.year, t.month, t.day)
        if kind == "weekly":
            return t.isocalendar()[:2]
        return (t.year, t.month)

    return key


def select(points: Iterable[Point], policy: Policy, now: float,
           pinned: Collection[str] = ()) -> Decision:
    """Splits points into those the policy keeps and those it drops."""
    newest_first = sorted(points, key=lambda p: (p.at, p.id), reverse=True)
    reasons: dict[str, list[str]] = {}

    def keep(point: Point, why: str) -> None:
        reasons.setdefault(point.id, []).append(why)

    for point in newest_first[: policy.keep_last]:
        keep(point, "last")
    for kind, count in (("hourly", policy.keep_hourly), ("daily", policy.keep_daily),
                        ("weekly", policy.keep_weekly), ("monthly", policy.keep_monthly)):
        seen: set[Hashable] = set()
        key = _bucket(kind)
        for point in newest_first:
            if len(seen) >= count:
                break
            bucket = key(point.at)
            if bucket not in seen:  # the newest point of each bucket stands for it
                seen.add(bucket)
                keep(point, kind)
    if policy.keep_within_s:
        for point in newest_first:
            if point.at >= now - policy.keep_within_s:
                keep(point, "within")
    for point in newest_first:
        if point.id in pinned:
            keep(point, "pinned")
    if newest_first and newest_first[0].id not in reasons:
        keep(newest_first[0], "newest")
    kept = [p for p in newest_first if p.id in reasons]
    dropped = [p for p in newest_first if p.id not in reasons]
    return Decision(kept, dropped, reasons)
