"""Which archived WAL retention lets go: decisions only (agent/archive_prune.py acts).

A WAL file may go only when both hold:
- it was last written before the oldest recovery point retention keeps
  (`cygnet:retained-since`): every scheduled snapshot or backup kept starts
  at or after that time, so it reads no WAL written before it;
- it lies wholly below the `low` LSN of every other recovery point (named
  snapshots, branch points) whose chain goes through its generation, since a
  recovery from such a point reads the chain's WAL from `low` on.

A generation no known recovery point reaches keeps all its WAL (its floor is
unknown, so nothing is guessed); so do history files and partial segments.
The off-host copy keeps its own retention (object lock), untouched here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cygnet.wal.lsn import segment
from cygnet.wal.plan import Link
from cygnet.wal.repo import WalObject

GenKey = tuple[str, int]


@dataclass(frozen=True)
class Point:
    """A recovery point's start on one chain: it reads `chain`'s WAL from `low` on."""

    low: int
    chain: tuple[GenKey, ...]  # the generation it lies on and every one it continues


def floors(points: Iterable[Point]) -> dict[GenKey, int]:
    """Per generation, the lowest LSN some recovery point still reads from it."""
    out: dict[GenKey, int] = {}
    for p in points:
        for key in p.chain:
            out[key] = min(out.get(key, p.low), p.low)
    return out


def prunable(links: Iterable[Link], floor: dict[GenKey, int], retained_since: float
             ) -> list[WalObject]:
    """The files of `links` that no retained recovery point needs; none while
    retention has recorded no oldest point yet (retained_since 0)."""
    if retained_since <= 0:
        return []
    out: list[WalObject] = []
    for link in links:
        low = floor.get(link.generation.key)
        if low is None:
            continue
        for name, obj in link.objects.items():
            seg = segment(name)
            if seg is None:  # history files are tiny and every recovery reads them
                continue
            if seg.end <= low and obj.mtime < retained_since:
                out.append(obj)
    return sorted(out, key=lambda o: o.name)
