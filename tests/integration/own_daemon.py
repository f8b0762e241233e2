"""A cygnetd of a test's own, with settings of its own (a TOML file), serving
the unix socket only: for tests that fill, export or kill what it runs on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.harness import Daemon, private_daemon


@contextlib.contextmanager
def own_daemon(prefix: str, port_min: int, pool_size: str, settings: str = ""
               ) -> Iterator[Daemon]:
    """`settings` is TOML for cygnetd's --config (e.g. "min_free_bytes = 1")."""
    with private_daemon(prefix, port_min, pool_size, settings=settings, unix_only=True) as d:
        yield d
