"""Helpers for the CLI tests: run `cygnet` as a subprocess against the session daemon.

No tests here; the test_cli_*.py modules import these.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import Daemon

CYGNET = str(Path(sys.executable).parent / "cygnet")
ANSI = re.compile(r"\x1b\[")

# Exit codes documented in docs/cli.md.
OK, ERROR, INVALID, NOT_FOUND, CONFLICT, UNREACHABLE, DENIED = 0, 1, 2, 3, 4, 5, 6


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CYGNET_")}
    env.update(extra)
    return env


def cygnet(daemon: Daemon | None, *args: str, expect: int | None = OK,
           env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """Runs `cygnet --socket <daemon's> ARGS`; checks the exit code unless expect is None."""
    argv = [CYGNET]
    if daemon is not None:
        argv += ["--socket", str(daemon.socket)]
    proc = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or cli_env())
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if expect is not None:
        assert result.code == expect, f"cygnet {' '.join(args)} -> {result}"
    return result


def assert_one_error_line(result: Result, *fragments: str) -> None:
    """A user error: exactly one line on stderr, in our format, without a traceback."""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("cygnet: error: "), result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], result.err
    assert result.out == ""


DATABASE_KEYS = {"id", "name", "postgres_version", "size_class", "pool", "main_branch_id",
                 "branch_count", "quota_bytes", "created_at"}
BRANCH_KEYS = {"id", "name", "database_id", "database_name", "parent_branch_id",
               "parent_branch_name", "origin_snapshot", "state", "state_message",
               "desired_running",
               "used_bytes", "logical_bytes", "port", "postgres_version", "size_class",
               "child_branch_ids", "created_at"}
BRANCH_KEYS = BRANCH_KEYS | {"suspend_after_seconds"}  # the idle timeout (scale to zero)
# Expiry and protection (docs/cli.md, "JSON shapes").
BRANCH_KEYS = BRANCH_KEYS | {"expires_at", "effective_expires_at", "protected", "protected_until"}
SNAPSHOT_KEYS = {"id", "name", "branch_id", "used_bytes", "dependent_branch_ids", "created_at"}
CONNECTION_KEYS = {"uri", "host", "port", "user", "password", "dbname", "socket_dir",
                   "endpoint_uri"}
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
