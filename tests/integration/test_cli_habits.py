"""CLI habits: --version, global flags anywhere, destructive commands that ask (or
refuse, or only list), `status`, contexts, `connect --env`, a denied role's exit code."""

from __future__ import annotations

import os
import select
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unique
from tests.harness import Daemon, fleet_pki
from tests.integration.test_cli_support import (
    BRANCH_KEYS,
    CYGNET,
    DENIED,
    ERROR,
    INVALID,
    assert_one_error_line,
    cli_env,
    cygnet,
)

pytestmark = pytest.mark.integration

HEAVY = ("grpc", "google.protobuf", "rich", "cygnet.api")


@pytest.fixture(scope="module")
def shop(daemon: Daemon) -> Iterator[str]:
    """A database with main, `a` and `a`'s child `b`, shared by this module."""
    name = unique("clih")
    cygnet(daemon, "db", "create", name, "--size", "nano")
    cygnet(daemon, "branch", "create", f"{name}/a")
    cygnet(daemon, "branch", "create", f"{name}/b", "--from", "a")
    yield name
    cygnet(daemon, "db", "rm", name, "--yes", expect=None)


def imported(*args: str) -> set[str]:
    """The modules `cygnet ARGS` imports (python -X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", CYGNET, *args],
                          capture_output=True, text=True, env=cli_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
            if line.startswith("import time:")}


def test_version_and_help_load_no_grpc() -> None:
    for flag in ("--version", "-V"):
        result = cygnet(None, flag)
        assert result.out.startswith("cygnet ") and result.out.split()[1][0].isdigit()
    for args in (["--version"], ["--help"]):
        modules = imported(*args)
        assert "cygnet.cli.main" in modules  # the measurement works
        loaded = sorted(m for m in modules if m.startswith(HEAVY))
        assert not loaded, f"cygnet {args[0]} imports {loaded}"


def test_global_flags_anywhere(daemon: Daemon, shop: str) -> None:
    after = cygnet(daemon, "branch", "list", shop, "--debug", "--json").json()
    before = cygnet(daemon, "--json", "--debug", "branch", "list", shop).json()
    assert [b["id"] for b in after] == [b["id"] for b in before]
    assert set(after[0]) == BRANCH_KEYS
    # After `--`, nothing is global: it belongs to psql.
    result = cygnet(daemon, "connect", shop, "--", "--json", expect=INVALID)
    assert_one_error_line(result, "--psql")


def test_destructive_commands_refuse_without_a_terminal(daemon: Daemon, shop: str) -> None:
    for args in (["db", "rm", shop], ["branch", "rm", f"{shop}/a", "--cascade"],
                 ["branch", "reset", f"{shop}/b"], ["backup", "prune", "--keep-last", "1"]):
        result = cygnet(daemon, *args, expect=INVALID)
        assert_one_error_line(result, "refusing", "--yes", "--dry-run")
    assert len(cygnet(daemon, "branch", "list", shop, "--json").json()) == 3


def test_dry_run_lists_and_touches_nothing(daemon: Daemon, shop: str) -> None:
    out = cygnet(daemon, "db", "rm", shop, "--dry-run").out
    assert f"would destroy database {shop}" in out
    for branch in ("main", "a", "b"):
        assert f"would destroy branch {shop}/{branch} (br" in out
    cascade = cygnet(daemon, "branch", "rm", f"{shop}/a", "--cascade", "--dry-run",
                     "--json").json()
    assert cascade["dry_run"] is True
    listed = [x.split(" (")[0] for x in cascade["would_destroy"] if x.startswith("branch")]
    assert listed == [f"branch {shop}/b", f"branch {shop}/a"]  # children first
    reset = cygnet(daemon, "branch", "reset", f"{shop}/b", "--dry-run").out
    assert f"every change of branch {shop}/b" in reset
    cygnet(daemon, "backup", "prune", "--keep-last", "0", "--db", shop, "--dry-run")
    assert len(cygnet(daemon, "branch", "list", shop, "--json").json()) == 3


def run_answering(argv: list[str], answer: str, timeout: float = 120) -> tuple[int, str]:
    """Runs argv on a pty and types `answer` at the confirmation question."""
    master, slave = os.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=cli_env(),
                            start_new_session=True)
    os.close(slave)
    seen, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            seen += data
            if not answered and b"Go ahead?" in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
        return proc.wait(timeout=10), seen.decode("utf-8", "replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def test_a_terminal_is_asked(daemon: Daemon) -> None:
    name = unique("cliq")
    cygnet(daemon, "db", "create", name, "--size", "nano")
    base = [CYGNET, "--socket", str(daemon.socket), "db", "rm", name]
    code, out = run_answering(base, "n")
    assert code == ERROR and "cancelled; nothing was changed" in out, out
    assert f"database {name}" in out and f"branch {name}/main" in out
    cygnet(daemon, "db", "show", name)
    code, out = run_answering(base, "y")
    assert code == 0 and f"Deleted database {name}" in out, out


def test_status(daemon: Daemon, shop: str) -> None:
    status = cygnet(daemon, "status", "--json").json()
    assert set(status) == {"host", "database_count", "branch_counts", "branches", "alerts"}
    assert status["host"]["pools"][0]["name"] == daemon.pool.name
    assert status["database_count"] >= 1 and status["branch_counts"]["running"] >= 3
    mine = {b["name"] for b in status["branches"] if b["database_name"] == shop}
    assert mine == {"main", "a", "b"}
    assert all(set(a) == {"subject", "message"} for a in status["alerts"])
    out = cygnet(daemon, "status").out
    assert daemon.pool.name in out, out
    assert f"Databases  {status['database_count']}" in out, out
    # One screen: on a busy host the list is cut ("... and N more").
    assert f"{shop}/main" in out or " more" in out, out
    assert "Alerts" in out or "No alerts." in out


def write_config(tmp_path: Path, text: str) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text(text)
    return cli_env(CYGNET_CONFIG=str(config))


def test_contexts(daemon: Daemon, shop: str, tmp_path: Path) -> None:
    cert, key = fleet_pki().pair("reader")
    env = write_config(tmp_path, f"""
current-context = "broken"
[contexts.local]
socket = "{daemon.socket}"
[contexts.broken]
socket = "/nonexistent/cygnetd.sock"
[contexts.remote]
host = "127.0.0.1:{daemon.listen_port}"
ca = "{daemon.server_ca}"
cert = "{cert}"
key = "{key}"
""")
    names = [d["name"] for d in cygnet(None, "--context", "local", "db", "list", "--json",
                                       env=env).json()]
    assert shop in names
    env_ctx = {**env, "CYGNET_CONTEXT": "remote"}
    assert shop in [d["name"] for d in cygnet(None, "db", "list", "--json", env=env_ctx).json()]
    # The current context is used by default; an explicit --socket wins over it.
    cygnet(None, "db", "list", env=env, expect=5)
    cygnet(None, "--socket", str(daemon.socket), "db", "list", env=env)
    listed = cygnet(None, "context", "list", env=env).out
    assert "* broken" in listed and "remote" in listed
    result = cygnet(None, "--context", "nope", "db", "list", env=env, expect=INVALID)
    assert_one_error_line(result, "no context 'nope'", "broken, local, remote")
    # The reader role may list but not create: PERMISSION_DENIED has its own exit code.
    result = cygnet(None, "db", "create", unique("clid"), env=env_ctx, expect=DENIED)
    assert_one_error_line(result)


def test_connect_env_keeps_the_password_in_pgpass(daemon: Daemon, shop: str,
                                                  tmp_path: Path) -> None:
    pgpass = tmp_path / "pgpass"
    env = cli_env(PGPASSFILE=str(pgpass))
    conn: dict[str, Any] = cygnet(daemon, "connect", f"{shop}/a", "--json").json()
    first = cygnet(daemon, "connect", f"{shop}/a", "--env", env=env).out
    assert conn["password"] not in first
    exports = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1)
                   for line in first.splitlines())
    assert set(exports) >= {"PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSSLMODE"}
    assert exports["PGPORT"] == str(conn["port"])
    cygnet(daemon, "connect", f"{shop}/a", "--env", env=env)  # again: no second line
    cygnet(daemon, "connect", f"{shop}/b", "--env", env=env)
    lines = pgpass.read_text().splitlines()
    assert len(lines) == 2 and lines[0].endswith(":" + conn["password"])
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    # libpq reads the password from the file.
    psql = subprocess.run(["psql", "-XAtc", "select 1"], capture_output=True, text=True,
                          env={**env, **exports, "PGCONNECT_TIMEOUT": "10"}, timeout=60)
    assert psql.returncode == 0 and psql.stdout.strip() == "1", psql.stderr
