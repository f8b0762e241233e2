"""pgBackRest beside a cygnetd cluster, as the baseline of the backup, restore and
point-in-time benchmarks: the same cluster, the same pool, one stanza.

Cygnet owns the cluster's archive_command, so pgBackRest's archive is fed by
`push_wal`, which pushes each finished segment from pg_wal with `archive-push`
(what its archive_command would run), while the writes go on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon, free_port, run

PGBIN = Path("/usr/lib/postgresql/15/bin")
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
SEGMENT_BYTES = 16 << 20
SLOT = "cygnet_bench_pgbackrest"


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


class PgBackRest:
    """pgBackRest 2.45 on the same cluster: repo on local disk, zstd level 1, one process
    (and, for the parallel figures, as many processes as cores)."""

    def __init__(self, base: Path, pgdata: Path, conn: pb.Connection) -> None:
        self.base = base
        self.pgdata = pgdata
        self.repo = base / "pgbackrest-repo"
        self.conf = base / "pgbackrest.conf"
        for d in (self.repo, base / "pgbr-log", base / "pgbr-lock"):
            d.mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "postgres", "postgres")
        self.conf.write_text(
            f"[global]\nrepo1-path={self.repo}\ncompress-type=zst\ncompress-level=1\n"
            f"process-max=1\nstart-fast=y\narchive-check=n\nlog-level-console=warn\n"
            f"log-path={base / 'pgbr-log'}\nlock-path={base / 'pgbr-lock'}\n\n"
            f"[bench]\npg1-path={pgdata}\npg1-port={conn.port}\n"
            f"pg1-socket-path={conn.socket_dir}\npg1-user=postgres\n")
        os.chmod(self.conf, 0o644)
        self._run("stanza-create")

    def _argv(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", "pgbackrest", f"--config={self.conf}",
                "--stanza=bench", *args]

    def _run(self, *args: str) -> float:
        started = time.perf_counter()
        subprocess.run(self._argv(*args), check=True, capture_output=True, timeout=7200)
        return time.perf_counter() - started

    def backup(self, kind: str, processes: int = 1) -> dict[str, Any]:
        before = tree_bytes(self.repo)
        seconds = self._run("backup", f"--type={kind}", f"--process-max={processes}")
        return {"seconds": round(seconds, 2), "bytes_written": tree_bytes(self.repo) - before,
                "process_max": processes, "label": self.latest()}

    def latest(self) -> str:
        out = subprocess.run(self._argv("--output=json", "info"), check=True,
                             capture_output=True, text=True).stdout
        return str(json.loads(out)[0]["backup"][-1]["label"])

    def restore(self, d: Daemon, label: str, processes: int) -> dict[str, Any]:
        """Into a new dataset of the daemon's pool: where Cygnet's restore writes."""
        with scratch_dataset(d, f"pgbr{processes}") as target:
            seconds = self._run("restore", f"--set={label}", f"--pg1-path={target}",
                                f"--process-max={processes}")
            return {"seconds": round(seconds, 2), "bytes_written": tree_bytes(target),
                    "process_max": processes}

    def push_wal(self, conninfo: str) -> WalPusher:
        """Starts pushing the cluster's finished WAL segments into the stanza."""
        return WalPusher(self, conninfo)

    def restore_to_time(self, d: Daemon, target: str, name: str) -> dict[str, Any]:
        """`restore --type=time` of the latest backup into a new dataset, then the
        server started on it and timed until recovery has promoted it: what a
        point-in-time branch's "ready" means."""
        with scratch_dataset(d, name) as pgdata:
            started = time.perf_counter()
            self._run("restore", f"--pg1-path={pgdata}", "--type=time", f"--target={target}",
                      "--target-action=promote")
            restored = time.perf_counter() - started
            sockets = pgdata.parent / "run"
            sockets.mkdir()
            shutil.chown(sockets, "postgres", "postgres")
            port = free_port()
            options = (f"-c port={port} -c listen_addresses='' -c archive_mode=off "
                       f"-c unix_socket_directories={sockets} -c ssl=off")
            logfile = sockets / "postgres.log"  # a directory postgres owns
            started_pg = run("runuser", "-u", "postgres", "--", str(PGBIN / "pg_ctl"), "-D",
                             str(pgdata), "-l", str(logfile), "-o", options, "start",
                             check=False)
            if started_pg.returncode != 0:
                tail = logfile.read_text()[-3000:] if logfile.exists() else ""
                raise RuntimeError(f"the restored server did not start: {started_pg.stderr} {tail}")
            try:
                wait_promoted(f"host={sockets} port={port} user=postgres dbname=postgres")
                return {"seconds": round(time.perf_counter() - started, 2),
                        "restore_seconds": round(restored, 2)}
            finally:
                run("runuser", "-u", "postgres", "--", str(PGBIN / "pg_ctl"), "-D",
                    str(pgdata), "-m", "immediate", "stop", check=False)


class WalPusher:
    """A thread that runs `archive-push` on each segment Postgres has finished."""

    def __init__(self, pgbr: PgBackRest, conninfo: str) -> None:
        self.pgbr, self.conninfo = pgbr, conninfo
        self.pushed: set[str] = set()
        # A slot keeps every segment from now on until it is pushed (a checkpoint
        # would remove an archived one at once); older ones precede the backup.
        self._sql("select pg_create_physical_replication_slot(%s, true)", SLOT)
        self.first = self._current()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sql(self, query: str, *params: object) -> str:
        with psycopg.connect(self.conninfo, autocommit=True) as c:
            row = c.execute(query, params).fetchone()
        assert row is not None
        return str(row[0])

    def _current(self) -> str:
        return self._sql("select pg_walfile_name(pg_current_wal_insert_lsn())")

    def _round(self, last: str = "") -> None:
        """Pushes the segments before the one being written (through `last` if given)."""
        wal = self.pgbr.pgdata / "pg_wal"
        # A name at or past `bound` is still being written (the bound itself is, unless
        # it is the last segment of a switch).
        bound = last if last else self._current()
        for name in sorted(os.listdir(wal)):
            done = (name <= bound if last else name < bound) and name >= self.first
            if _SEGMENT.match(name) and done and name not in self.pushed:
                pushed = subprocess.run(self.pgbr._argv("archive-push", str(wal / name)),
                                        capture_output=True, text=True, timeout=600)
                if pushed.returncode != 0:
                    raise RuntimeError(f"archive-push {name}: {pushed.stderr or pushed.stdout}")
                self.pushed.add(name)
                end = (int(name[8:16], 16) * 0x100 + int(name[16:], 16) + 1) * SEGMENT_BYTES
                self._sql("select pg_replication_slot_advance(%s, %s::pg_lsn)", SLOT,
                          f"{end >> 32:X}/{end & 0xFFFFFFFF:X}")

    def _loop(self) -> None:
        try:
            while not self._stop.wait(0.5):
                self._round()
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> int:
        """Switches to a new segment, pushes everything finished, and stops; the count."""
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise self.error
        self._round(last=self._sql("select pg_walfile_name(pg_switch_wal())"))
        self._sql("select pg_drop_replication_slot(%s) is null", SLOT)
        numbers = sorted(int(n[8:16], 16) * 0x100 + int(n[16:], 16) for n in self.pushed)
        if numbers and numbers[-1] - numbers[0] + 1 != len(numbers):
            raise RuntimeError("a WAL segment was removed before pgBackRest got it")
        return len(self.pushed)


def wait_promoted(conninfo: str, timeout: float = 3600.0) -> None:
    """Until the server answers and is out of recovery."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(conninfo, connect_timeout=5) as c:
                row = c.execute("select pg_is_in_recovery()").fetchone()
                if row is not None and not row[0]:
                    return
        except psycopg.OperationalError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"still recovering after {timeout:.0f}s")


class scratch_dataset:
    """A new dataset of the daemon's pool with an empty pgdata owned by postgres;
    destroyed on the way out."""

    def __init__(self, d: Daemon, name: str) -> None:
        self.dataset = f"{d.pool.name}/cygnet/{name}"
        self.pgdata = d.mount_root / d.pool.name / name / "pgdata"

    def __enter__(self) -> Path:
        run("zfs", "create", self.dataset)
        self.pgdata.mkdir(mode=0o700)
        shutil.chown(self.pgdata, "postgres", "postgres")
        return self.pgdata

    def __exit__(self, *exc: object) -> None:
        for _ in range(50):  # zfs-fuse reports busy for a moment after the last write
            if run("zfs", "destroy", "-r", self.dataset, check=False).returncode == 0:
                break
            time.sleep(0.2)
