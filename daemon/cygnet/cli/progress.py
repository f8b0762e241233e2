"""Progress for long operations: a spinner with elapsed time on a terminal, silence otherwise."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cygnet.cli.output import console, isatty


def _elapsed_column() -> Any:
    # rich's TimeElapsedColumn shows whole seconds; most of our operations take less.
    # Made here: rich is loaded only when a person watches.
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class Elapsed(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{task.elapsed or 0.0:.1f}s", style="cyan")

    return Elapsed()


def interactive() -> bool:
    """Progress only when a person watches: both stdout and stderr are terminals."""
    return isatty(1) and isatty(2)


@contextmanager
def working(doing: str, done: str) -> Iterator[None]:
    """Shows `doing… 1.2s` while the block runs, then `done in 1.2s` (on stderr)."""
    if not interactive():
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn

    err = console(stderr=True)
    start = time.monotonic()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), _elapsed_column(),
                  console=err, transient=True, refresh_per_second=10) as bar:
        bar.add_task(f"{doing}…", total=None)
        yield
    err.print(f"[green]✓[/] {done} in {time.monotonic() - start:.1f}s")
