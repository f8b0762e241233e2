"""Shared parts of the benchmarks: timing summaries and a throwaway daemon on its own pool."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from tests.harness import Daemon, private_daemon

RESULTS = Path(__file__).resolve().parent / "results"


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95_index = min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))
    return {"p50": round(statistics.median(ordered), 4), "p95": round(ordered[p95_index], 4),
            "min": round(ordered[0], 4), "max": round(ordered[-1], 4), "n": len(ordered)}


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def wait_query(conninfo: str, timeout: float = 60.0, **kwargs: Any) -> None:
    """Connects and runs `select 1`, retrying every 2 ms until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(conninfo, connect_timeout=5, **kwargs) as conn:
                conn.execute("select 1").fetchone()
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)


@contextmanager
def bench_daemon(pool_size: str, port_min: int, settings: str | None = None
                 ) -> Iterator[Daemon]:
    """A throwaway cygnetd on its own pool; `settings` is TOML for its --config."""
    with private_daemon("bench-", port_min, pool_size, settings=settings) as daemon:
        yield daemon


def emit(name: str, result: dict[str, Any], out: Path | None = RESULTS) -> Path:
    """Prints the JSON result and keeps a copy in OUT/NAME.json (default, or None:
    benchmarks/results)."""
    out = out or RESULTS
    text = json.dumps(result, indent=2)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return path


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def record_args(record_size: str) -> tuple[str, ...]:
    """cygnetd's flags for a benchmark's `--record-size` (none: the daemon's default)."""
    return ("--record-size", record_size) if record_size else ()
