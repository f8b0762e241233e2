"""Progress for long operations: a spinner with elapsed time on a terminal, silence otherwise."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
from rich.text import Text

from cygnet.cli.output import console, isatty


class _Elapsed(ProgressColumn):
    # rich's TimeElapsedColumn shows whole seconds; most of our operations take less.
    def render(self, task: Task) -> Text:
        return Text(f"{task.elapsed or 0.0:.1f}s", style="cyan")


def interactive() -> bool:
    """Progress only when a person watches: both stdout and stderr are terminals."""
    return isatty(1) and isatty(2)


@contextmanager
def working(doing: str, done: str) -> Iterator[None]:
    """Shows `doing… 1.2s` while the block runs, then `done in 1.2s` (on stderr)."""
    if not interactive():
        yield
        return
    err = console(stderr=True)
    start = time.monotonic()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), _Elapsed(),
                  console=err, transient=True, refresh_per_second=10) as bar:
        bar.add_task(f"{doing}…", total=None)
        yield
    err.print(f"[green]✓[/] {done} in {time.monotonic() - start:.1f}s")
