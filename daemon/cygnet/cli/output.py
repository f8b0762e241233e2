"""Where output goes: rich consoles for people, plain text and JSON for scripts.

When stdout is not a terminal nothing decorative is written and no ANSI code
at all, whatever FORCE_COLOR says: piped output is for programs. Tables and
`key  value` blocks are then drawn here without rich, in the same layout rich
would give them: rich costs ~40 ms to import, and `cygnet db list` in a
script's loop must cost little more than grpc's own import. rich is loaded
only for a terminal, or for a renderable only it can draw (trees, groups).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from cygnet.states import BranchState

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp
    from rich.console import Console, RenderableType
    from rich.table import Table

STATE_STYLES: dict[str, str] = {
    BranchState.RUNNING: "green", BranchState.STOPPED: "dim", BranchState.FAILED: "bold red",
    BranchState.CREATING: "yellow", BranchState.STARTING: "yellow",
    BranchState.RESETTING: "yellow", BranchState.DELETING: "magenta",
    BranchState.UNAVAILABLE: "bold red",
    BranchState.SUSPENDING: "cyan", BranchState.SUSPENDED: "cyan",
}
# Piped tables are read by programs and people with wide terminals: never wrap.
PIPE_WIDTH = 250
# A rule under the header, as rich's SIMPLE_HEAD box draws it.
RULE = "─"


def isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (OSError, ValueError):
        return False


def _plain(cell: Any) -> str:
    return cell if isinstance(cell, str) else str(getattr(cell, "plain", cell))


@dataclass
class PlainTable:
    """A table for a pipe: columns 3 spaces apart, a rule under the header."""

    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    title: str | None = None

    def lines(self) -> list[str]:
        widths = [max([len(c), *(len(r[i]) for r in self.rows)])
                  for i, c in enumerate(self.columns)]

        def line(cells: Sequence[str]) -> str:
            return "   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        head = [self.title] if self.title else []
        return [*head, line(self.columns), RULE * (sum(widths) + 3 * (len(widths) - 1)),
                *(line(r) for r in self.rows)]


@dataclass
class PlainFields:
    """`key  value` lines for a pipe."""

    pairs: list[tuple[str, str]]

    def lines(self) -> list[str]:
        width = max((len(k) for k, _ in self.pairs), default=0)
        return [f"{k.ljust(width)}  {v}".rstrip() for k, v in self.pairs]


Renderable = Union["RenderableType", PlainTable, PlainFields]


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    fd = 2 if stderr else 1
    tty = isatty(fd) and stdout_is_tty()
    return Console(stderr=stderr, force_terminal=tty, highlight=False, soft_wrap=False,
                   width=None if tty else PIPE_WIDTH, emoji=False)


def emit_json(value: Any) -> None:
    import json  # only for --json

    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _fits_plain(r: Any) -> bool:
    if isinstance(r, PlainTable):
        return max(len(line) for line in r.lines()) <= PIPE_WIDTH
    return isinstance(r, (str, PlainFields)) or (
        type(r).__name__ == "Text" and not getattr(r, "spans", None) and "\n" not in r.plain)


def show(*renderables: Renderable) -> None:
    """Prints to stdout; plain strings are literal text, never rich markup."""
    tty = stdout_is_tty()
    if not tty and all(_fits_plain(r) for r in renderables):
        lines: list[str] = []
        for r in renderables:
            lines += r.lines() if isinstance(r, (PlainTable, PlainFields)) else [_plain(r)]
        sys.stdout.write("".join(line.rstrip() + "\n" for line in lines))
        return
    from rich.text import Text

    out = console()
    items = [Text(r) if isinstance(r, str) else _rich(r) for r in renderables]
    if out.is_terminal:
        out.print(*items, sep="\n", crop=False)
        return
    # Piped: rich pads cells with spaces; strip them so `grep`/`awk` see clean lines.
    with out.capture() as captured:
        out.print(*items, sep="\n", crop=False)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def _rich(r: Any) -> Any:
    """A plain table or block drawn by rich after all (mixed with rich renderables)."""
    if isinstance(r, PlainTable):
        return _rich_table(r.columns, r.rows, r.title)
    if isinstance(r, PlainFields):
        return _rich_fields(r.pairs)
    return r


def table(columns: Iterable[str], rows: Iterable[Iterable[Any]],
          title: str | None = None) -> Any:
    if not stdout_is_tty():
        return PlainTable(list(columns), [[_plain(c) for c in row] for row in rows], title)
    return _rich_table(columns, rows, title)


def _rich_table(columns: Iterable[str], rows: Iterable[Iterable[Any]],
                title: str | None) -> Table:
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False,
              show_edge=False)
    for name in columns:
        t.add_column(name, overflow="fold")
    for row in rows:
        t.add_row(*row)
    return t


def fields(pairs: Iterable[tuple[str, Any]]) -> Any:
    """A two-column `key  value` block for `show` commands."""
    pairs = list(pairs)
    if not stdout_is_tty() and all(_fits_plain(v) for _, v in pairs):
        return PlainFields([(k, _plain(v)) for k, v in pairs])
    return _rich_fields(pairs)


def _rich_fields(pairs: Iterable[tuple[str, Any]]) -> Table:
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(key, value)
    return grid


def state(name: str) -> Any:
    """A branch state, coloured on a terminal."""
    if not stdout_is_tty():
        return name
    from rich.text import Text

    return Text(name, style=STATE_STYLES.get(name, ""))


def size(n: int) -> str:
    """Decimal units, as rich.filesize.decimal: `1.0 MB`, `364.5 kB`, `12 bytes`."""
    if n == 1:
        return "1 byte"
    if n < 1000:
        return f"{n:,} bytes"
    units = ("kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = next((i for i in range(2, len(units) + 1) if n < 1000 ** i), len(units) + 1)
    return f"{n / 1000 ** (i - 1):,.1f} {units[i - 2]}"


def age(ts: Timestamp, now: dt.datetime | None = None) -> str:
    """`5s ago`, `3m ago`, `2h ago`, `4d ago`."""
    if ts.seconds == 0:
        return "-"
    now = now or dt.datetime.now(dt.UTC)
    secs = max(0, int((now - ts.ToDatetime(tzinfo=dt.UTC)).total_seconds()))
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= length:
            return f"{secs // length}{unit} ago"
    return f"{secs}s ago"


def timestamp(ts: Timestamp) -> str:
    if ts.seconds == 0:
        return "-"
    when = ts.ToDatetime(tzinfo=dt.UTC).replace(microsecond=0)
    return f"{when.isoformat().replace('+00:00', 'Z')} ({age(ts)})"
