"""Where output goes: rich consoles for people, plain JSON for scripts.

When stdout is not a terminal nothing decorative is written and no ANSI code
at all, whatever FORCE_COLOR says: piped output is for programs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Iterable
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from rich import box
from rich.console import Console, RenderableType
from rich.filesize import decimal
from rich.table import Table
from rich.text import Text

from cygnet.states import BranchState

STATE_STYLES: dict[str, str] = {
    BranchState.RUNNING: "green", BranchState.STOPPED: "dim", BranchState.FAILED: "bold red",
    BranchState.CREATING: "yellow", BranchState.STARTING: "yellow",
    BranchState.RESETTING: "yellow", BranchState.DELETING: "magenta",
    BranchState.UNAVAILABLE: "bold red",
}
# Piped tables are read by programs and people with wide terminals: never wrap.
PIPE_WIDTH = 250


def isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def stdout_is_tty() -> bool:
    return isatty(sys.stdout.fileno())


def console(stderr: bool = False) -> Console:
    fd = 2 if stderr else 1
    tty = isatty(fd) and stdout_is_tty()
    return Console(stderr=stderr, force_terminal=tty, highlight=False, soft_wrap=False,
                   width=None if tty else PIPE_WIDTH, emoji=False)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def show(*renderables: RenderableType) -> None:
    """Prints to stdout; plain strings are literal text, never rich markup."""
    out = console()
    items = [Text(r) if isinstance(r, str) else r for r in renderables]
    if out.is_terminal:
        out.print(*items, sep="\n", crop=False)
        return
    # Piped: rich pads cells with spaces; strip them so `grep`/`awk` see clean lines.
    with out.capture() as captured:
        out.print(*items, sep="\n", crop=False)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def table(columns: Iterable[str], rows: Iterable[Iterable[RenderableType]],
          title: str | None = None) -> Table:
    t = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False,
              show_edge=False)
    for name in columns:
        t.add_column(name, overflow="fold")
    for row in rows:
        t.add_row(*row)
    return t


def fields(pairs: Iterable[tuple[str, RenderableType]]) -> Table:
    """A two-column `key  value` block for `show` commands."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(key, value)
    return grid


def state(name: str) -> Text:
    return Text(name, style=STATE_STYLES.get(name, ""))


def size(n: int) -> str:
    return decimal(n)


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
