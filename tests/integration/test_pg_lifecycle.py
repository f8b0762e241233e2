"""Real initdb/start/stop/adopt of PostgreSQL clusters (see pg_helpers for the fixtures)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TypedDict

import psycopg
import pytest

from cygnet.agent import lease
from cygnet.errors import Aborted, FailedPrecondition
from cygnet.postgres import process, sql
from cygnet.postgres import settings as user_settings
from cygnet.postgres.config import write_settings
from cygnet.postgres.pidfile import PIDFILE, read_pidfile
from cygnet.postgres.procfs import read_stat
from tests.integration import pg_helpers
from tests.integration.pg_helpers import PgEnv

pytestmark = pytest.mark.integration

# Fixtures shared through pg_helpers (no conftest.py in this layer's files).
pg_template = pg_helpers.pg_template
pg_env = pg_helpers.pg_env

PASSWORD = "p@ss w:rd/'\"%"


class PasswordOption(TypedDict, total=False):
    password: str


def tcp_connect(port: int, password: str | None) -> psycopg.Connection:
    kwargs: PasswordOption = {"password": password} if password is not None else {}
    return psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres",
        connect_timeout=5, **kwargs,
    )


def test_template_is_clean_and_has_no_trust(pg_template: tuple[Path, Path]) -> None:
    pgdata, _ = pg_template
    assert not (pgdata / PIDFILE).exists()
    assert (pgdata.stat().st_mode & 0o777) == 0o700
    hba = (pgdata / "pg_hba.conf").read_text()
    assert "trust" not in hba
    assert "include_if_exists = 'cygnet.conf'" in (pgdata / "postgresql.conf").read_text()


def test_start_connect_socket_and_tcp(pg_env: PgEnv) -> None:
    c = pg_env.new_cluster("a")
    t0 = time.monotonic()
    pm = c.start()
    started_in = time.monotonic() - t0
    assert pm.is_alive()
    pidfile = read_pidfile(c.pgdata)
    assert pidfile is not None and pidfile.pid == pm.pid and pidfile.status == "ready"
    assert pidfile.port == c.port
    # Detached: not our child, own session.
    stat = read_stat(pm.pid)
    assert stat is not None and stat.ppid != os.getpid()
    assert os.getsid(pm.pid) == pm.pid
    # Over the socket as role postgres (peer auth maps root).
    row = asyncio.run(sql.query_one(c.socket_dir, c.port, "SELECT current_user, 40 + 2"))
    assert row == ("postgres", 42)
    asyncio.run(sql.set_password(c.socket_dir, c.port, "postgres", PASSWORD))
    with tcp_connect(c.port, PASSWORD) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    uri = sql.connection_uri("127.0.0.1", c.port, "postgres", PASSWORD, "postgres")
    with psycopg.connect(uri, connect_timeout=5) as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)
    with pytest.raises(psycopg.OperationalError):
        tcp_connect(c.port, None)
    with pytest.raises(psycopg.OperationalError):
        tcp_connect(c.port, "wrong")
    assert PASSWORD not in c.layout.log_file.read_text()
    # A new login role, created by set_password.
    asyncio.run(sql.set_password(c.socket_dir, c.port, "App User", "s3cret"))
    with psycopg.connect(
        sql.connection_uri("127.0.0.1", c.port, "App User", "s3cret", "postgres")
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("App User",)
    print(f"start took {started_in * 1000:.0f} ms")


def test_start_refuses_when_running(pg_env: PgEnv) -> None:
    c = pg_env.new_cluster("a")
    c.start()
    with pytest.raises(FailedPrecondition):
        c.start()


@pytest.mark.parametrize("mode", ["smart", "fast", "immediate"])
def test_stop_modes(pg_env: PgEnv, mode: str) -> None:
    c = pg_env.new_cluster("a")
    pm = c.start()
    asyncio.run(sql.checkpoint_for_snapshot(c.socket_dir, c.port))
    c.stop(mode)
    assert not pm.is_alive()
    assert process.find_live_postmaster(c.pgdata) is None
    c.stop(mode)  # no-op when not running
    # Restartable afterwards (after immediate: with crash recovery).
    pm2 = c.start()
    assert pm2.pid != pm.pid
    assert asyncio.run(sql.query_one(c.socket_dir, c.port, "SELECT 1")) == (1,)


def test_a_quiesced_stop_loses_no_commit(pg_env: PgEnv) -> None:
    """process.quiesced_stop: a smart shutdown (new clients get 57P03), sessions
    ended, a CHECKPOINT, an immediate stop. An asynchronous commit made just before
    is there after the next start, which replays next to nothing; the WAL segment
    was not switched (a fast stop with archiving on would have)."""
    c = pg_env.new_cluster("a")
    pm = c.start()
    asyncio.run(sql.set_password(c.socket_dir, c.port, "postgres", PASSWORD))
    session = tcp_connect(c.port, PASSWORD)
    session.autocommit = True
    session.execute("SET synchronous_commit = off")
    session.execute("CREATE TABLE t (n int)")
    session.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    segment = session.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
    refused: list[str] = []

    async def stop_while_a_client_knocks() -> int:
        stopping = asyncio.create_task(process.quiesced_stop(c.pgdata, c.socket_dir, c.port))
        while not stopping.done():
            try:
                conn = await psycopg.AsyncConnection.connect(
                    host="127.0.0.1", port=c.port, user="postgres", password=PASSWORD,
                    dbname="postgres", connect_timeout=5)
                await conn.close()
            except psycopg.OperationalError as exc:
                refused.append(str(exc))
            await asyncio.sleep(0.001)
        return await stopping

    try:
        # The session, and a knocking client let in before the postmaster took SIGTERM.
        assert asyncio.run(stop_while_a_client_knocks()) >= 1
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
    finally:
        session.close()
    assert not pm.is_alive()
    # What a client connecting meanwhile heard: shutting down (57P03), never an
    # authentication error.
    assert refused and not [r for r in refused if "pg_hba" in r or "password" in r], refused
    assert any("shutting down" in r or "Connection refused" in r for r in refused)
    log_offset = c.layout.log_file.stat().st_size
    c.start()
    with tcp_connect(c.port, PASSWORD) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1000,)
        now = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
    log = c.layout.log_file.read_text()[log_offset:]
    assert "automatic recovery in progress" in log
    assert "redo is not required" in log or "redo done" in log
    assert now == segment  # the start continued the segment the stop left open
    assert asyncio.run(process.quiesced_stop(c.pgdata / "nothing", c.socket_dir, c.port)) == 0


def test_stop_escalates_to_immediate(pg_env: PgEnv) -> None:
    c = pg_env.new_cluster("a")
    pm = c.start()
    # A smart shutdown waits for this open session forever; the timeout escalates.
    conn = psycopg.connect(host=str(c.socket_dir), port=c.port, user="postgres", dbname="postgres")
    try:
        t0 = time.monotonic()
        asyncio.run(process.stop(c.pgdata, "smart", timeout=0.5))
        assert time.monotonic() - t0 < 10
        assert not pm.is_alive()
    finally:
        conn.close()


def test_adopts_running_postmaster(pg_env: PgEnv) -> None:
    c = pg_env.new_cluster("a")
    pm = c.start()
    found = process.find_live_postmaster(c.pgdata)
    assert found == pm


def test_survives_kill_9_of_starter(pg_env: PgEnv) -> None:
    """The daemon dying (SIGKILL) right after start must not stop Postgres."""
    c = pg_env.new_cluster("a")
    code = (
        "import asyncio, os, signal, sys\n"
        "from pathlib import Path\n"
        "from cygnet.postgres import process\n"
        "pm = asyncio.run(process.start(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))\n"
        "print(pm.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    argv = [sys.executable, "-c", code, str(c.bindir), str(c.pgdata), str(c.layout.log_file)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == -9, out.stderr
    pid = int(out.stdout)
    time.sleep(0.2)
    found = process.find_live_postmaster(c.pgdata)
    assert found is not None and found.pid == pid
    assert asyncio.run(sql.query_one(c.socket_dir, c.port, "SELECT 1")) == (1,)


def _dead_pid() -> int:
    proc = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


def _write_pidfile(pgdata: Path, pid: int) -> None:
    (pgdata / PIDFILE).write_text(f"{pid}\n{pgdata}\n1700000000\n5432\n/tmp\n*\n  0 0\nready   \n")


def test_stale_pidfile_dead_pid_not_adopted(pg_env: PgEnv) -> None:
    c = pg_env.new_cluster("a")
    _write_pidfile(c.pgdata, _dead_pid())
    assert process.find_live_postmaster(c.pgdata) is None
    pm = c.start()  # removes the stale pid file
    assert process.find_live_postmaster(c.pgdata) == pm


def test_reused_pid_not_adopted(pg_env: PgEnv) -> None:
    a = pg_env.new_cluster("a")
    b = pg_env.new_cluster("b")
    pm_a = a.start()
    # Our own pid: alive, but not a postgres binary.
    _write_pidfile(b.pgdata, os.getpid())
    assert process.find_live_postmaster(b.pgdata) is None
    # Another cluster's postmaster: a postgres binary, but its cwd is a's pgdata.
    _write_pidfile(b.pgdata, pm_a.pid)
    assert process.find_live_postmaster(b.pgdata) is None
    # Postgres itself would refuse this pid file; start() clears it.
    pm_b = b.start()
    assert pm_b.pid != pm_a.pid and pm_a.is_alive()


def test_failed_start_reports_log(pg_env: PgEnv) -> None:
    c = pg_env.new_cluster("a")
    with (c.pgdata / "postgresql.auto.conf").open("a") as f:
        f.write("shared_buffers = 'lots'\n")
    t0 = time.monotonic()
    with pytest.raises(Aborted, match="shared_buffers"):
        c.start()
    assert time.monotonic() - t0 < 5
    assert process.find_live_postmaster(c.pgdata) is None


def test_a_branch_list_of_preloaded_libraries_keeps_the_fence(pg_env: PgEnv) -> None:
    """A replicated primary whose own settings name other libraries still loads
    cygnet_fence (cygnet.final.conf comes after cygnet.user.conf)."""
    if not (pg_env.bindir.parent / "lib" / "cygnet_fence.so").exists():
        pytest.skip("cygnet_fence.so is not built (native/fence/build)")
    lease_file = pg_env.base / "fence-lease"
    lease.write_deadline(lease_file, lease.now_ns() + 600 * 10**9)
    c = pg_env.new_cluster("fenced", fence_file=lease_file)
    user_settings.write(c.pgdata, {"shared_preload_libraries": "pg_stat_statements,auto_explain"})
    write_settings(c.pgdata, c.settings)
    c.start()
    show = "SELECT current_setting('shared_preload_libraries')"
    row = asyncio.run(sql.query_one(c.socket_dir, c.port, show))
    assert row is not None
    libs = row[0]
    assert libs == "pg_stat_statements,auto_explain,cygnet_fence"
    # The same branch without the fence (no replica) runs its own list only.
    c.stop()
    write_settings(c.pgdata, replace(c.settings, fence_file=None))
    c.start()
    row = asyncio.run(sql.query_one(c.socket_dir, c.port, show))
    assert row is not None
    libs = row[0]
    assert libs == "pg_stat_statements,auto_explain"
