"""A cygnetd of a test's own, with settings of its own (a TOML file), serving
the unix socket only: for tests that fill, export or kill what it runs on."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

from tests.harness import WORK, Daemon, FilePool


@contextlib.contextmanager
def own_daemon(prefix: str, port_min: int, pool_size: str, settings: str = ""
               ) -> Iterator[Daemon]:
    """`settings` is TOML for cygnetd's --config (e.g. "min_free_bytes = 1")."""
    pool = FilePool.create(pool_size)
    base = WORK / (prefix + secrets.token_hex(3))
    base.mkdir(parents=True, exist_ok=True)
    config = base / "cygnetd.toml"
    config.write_text(settings)
    daemon = Daemon(pool, base, port_min=port_min,
                    extra_args=["--config", str(config), "--listen", ""])
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        pool.destroy(daemon.mount_root)
