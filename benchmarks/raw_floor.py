"""The raw floor of a branch, done by hand: CHECKPOINT, zfs snapshot, zfs clone, start, query.

No daemon, no gRPC, no fix-up beyond what Postgres needs to start (a stale
pid file removed, its own port and socket directory). This is the baseline
the daemon's branch-ready time is compared with.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import psycopg

from benchmarks.common import wait_query
from cygnet.postgres.layout import postgres_user

BINDIR = Path("/usr/lib/postgresql/15/bin")


def _zfs(*args: str) -> None:
    subprocess.run(["zfs", *args], check=True, capture_output=True)


def raw_branch(parent_dataset: str, parent_socket: str, parent_port: int, mount: Path,
               port: int, password: str) -> tuple[float, str]:
    """Returns (seconds to first query, clone dataset); the clone is left running."""
    tag = "raw" + secrets.token_hex(3)
    clone = f"{parent_dataset.rsplit('/', 1)[0]}/{tag}"
    sockdir = Path("/tmp") / tag
    started = time.perf_counter()
    with psycopg.connect(host=parent_socket, port=parent_port, user="postgres",
                         dbname="postgres", autocommit=True) as conn:
        conn.execute("checkpoint")
    _zfs("snapshot", f"{parent_dataset}@{tag}")
    _zfs("clone", f"{parent_dataset}@{tag}", clone)
    pgdata = mount / tag / "pgdata"
    (pgdata / "postmaster.pid").unlink(missing_ok=True)
    sockdir.mkdir(mode=0o700)
    user = postgres_user()
    os.chown(sockdir, user.uid, user.gid)
    subprocess.Popen(
        [str(BINDIR / "postgres"), "-D", str(pgdata), "-p", str(port), "-k", str(sockdir),
         "-c", "listen_addresses=127.0.0.1", "-c", "logging_collector=off",
         # The same start-up setting cygnetd uses, so the comparison measures
         # the daemon's own overhead, not a Postgres setting.
         "-c", "recovery_init_sync_method=syncfs"],
        user=user.uid, group=user.gid, extra_groups=[], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    # Over TCP with the password, like a client of a daemon-made branch.
    wait_query(f"host=127.0.0.1 port={port} user=postgres dbname=postgres password={password}")
    elapsed = time.perf_counter() - started
    return elapsed, clone


def drop_raw_branch(clone: str, parent_dataset: str, mount: Path) -> None:
    tag = clone.rsplit("/", 1)[1]
    pgdata = mount / tag / "pgdata"
    subprocess.run([str(BINDIR / "pg_ctl"), "-D", str(pgdata), "stop", "-m", "immediate"],
                   user=postgres_user().uid, capture_output=True)
    for _ in range(50):
        if subprocess.run(["zfs", "destroy", "-r", clone], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    subprocess.run(["zfs", "destroy", f"{parent_dataset}@{tag}"], capture_output=True)
    shutil.rmtree(Path("/tmp") / tag, ignore_errors=True)


def raw_new_cluster(workdir: Path, port: int) -> float:
    """initdb + start + first query: what a database costs without a template."""
    user = postgres_user()
    pgdata = workdir / "pgdata"
    workdir.mkdir(parents=True, exist_ok=True)
    os.chown(workdir, user.uid, user.gid)
    started = time.perf_counter()
    subprocess.run([str(BINDIR / "initdb"), "-D", str(pgdata), "-U", "postgres",
                    "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8"],
                   user=user.uid, group=user.gid, extra_groups=[], check=True,
                   capture_output=True, cwd="/")
    subprocess.Popen([str(BINDIR / "postgres"), "-D", str(pgdata), "-p", str(port),
                      "-k", str(workdir), "-c", "listen_addresses="],
                     user=user.uid, group=user.gid, extra_groups=[],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, cwd="/")
    wait_query(f"host={workdir} port={port} user=postgres dbname=postgres")
    elapsed = time.perf_counter() - started
    subprocess.run([str(BINDIR / "pg_ctl"), "-D", str(pgdata), "stop", "-m", "immediate"],
                   user=user.uid, capture_output=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return elapsed
