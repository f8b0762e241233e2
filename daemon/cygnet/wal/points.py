"""A point in a branch's WAL, as recorded on snapshots (`cygnet:wal-point`) and forks.

A crash-consistent snapshot holds WAL up to some end that cannot be read
exactly: `low` is the insert LSN read just before `zfs snapshot`, `high` the
one read just after, at `time`. The end lies in [low, high]. A snapshot can
serve a target at or after `high` (and a time target at or after `time`); a
child's own WAL can differ from its parent's only from `low` on.
"""

from __future__ import annotations

from dataclasses import dataclass

from cygnet.errors import InvalidArgument
from cygnet.wal.lsn import format_lsn, parse_lsn


@dataclass(frozen=True)
class WalPoint:
    low: int
    high: int
    time: float

    def text(self) -> str:
        return f"{format_lsn(self.low)}-{format_lsn(self.high)}@{self.time:.3f}"

    @staticmethod
    def parse(text: str | None) -> WalPoint | None:
        """None for an absent or garbled value: the point is then unknown, never guessed."""
        if not text or "@" not in text or "-" not in text:
            return None
        try:
            lsns, when = text.split("@", 1)
            low, high = lsns.split("-", 1)
            return WalPoint(parse_lsn(low), parse_lsn(high), float(when))
        except (ValueError, InvalidArgument):
            return None
