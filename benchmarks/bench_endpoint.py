"""The endpoint's data path against a direct connection and PgBouncer, in one run.

    .venv/bin/python -m benchmarks.bench_endpoint             # 60 s per path
    .venv/bin/python -m benchmarks.bench_endpoint --small     # 3 s per path: a smoke run

Starts a throwaway cygnetd (endpoint domain bench.test) on its own pool, makes
one database, loads pgbench (scale 1), then runs `pgbench -S -c 8 -j 2`
against, in turn:

- **direct**: the branch's own port (TLS, SCRAM), the baseline;
- **endpoint**: the host's endpoint by TLS SNI (`NAME.bench.test`, hostaddr
  127.0.0.1): the client's socket is handed to the branch's postmaster, so
  nothing sits between them once routed;
- **endpoint_relay**: the same by SNI to a branch whose postmaster cannot
  take a client (its handoff socket removed, as for a postmaster started
  before the handoff existed): TLS passed through, bytes moved by the C relay;
- **endpoint_options**: the endpoint without SNI (`options=endpoint=NAME`),
  TLS ended and re-opened at the endpoint (OpenSSL in C), bytes moved by the C
  relay (the path without endpoint_domain);
- **pgbouncer**: Debian's PgBouncer in transaction mode, TLS on both sides.

Per path: TPS, p50/p95 latency from pgbench's per-transaction log, the
CPU time the middle processes (cygnetd and its relay process, or pgbouncer)
spent per transaction, in microseconds, less what cygnetd spends idle
(never below 0), and the median time to connect and answer a first query.
Prints JSON.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.common import emit, log
from cygnet.agent.layout import socket_dir
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.endpoint.relay_link import relay_pid
from cygnet.postgres.handoff import socket_path
from tests.harness import Daemon, free_port, private_daemon

DOMAIN = "bench.test"
PGBIN = Path("/usr/lib/postgresql/15/bin")
CLIENTS = 8
ROUNDS = 3


@dataclass(frozen=True)
class Path_:
    name: str
    conninfo: str
    processes: tuple[int, ...]  # pids whose CPU is the path's cost; (): none


def _cpu_seconds(*pids: int) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_pgbench(conninfo: str, password: str, seconds: int, logdir: Path
                ) -> tuple[float, int, list[int]]:
    """(seconds run, transactions, sampled latencies in microseconds) of one pgbench -S."""
    for old in logdir.glob("pgbench_log*"):
        old.unlink()
    env = {**os.environ, "PGPASSWORD": password}
    out = subprocess.run(
        [str(PGBIN / "pgbench"), "-n", "-S", "-c", str(CLIENTS), "-j", "2", "-T", str(seconds),
         "-l", "--sampling-rate", "1" if seconds < 10 else "0.05",  # short runs: every one
         "--log-prefix", str(logdir / "pgbench_log"), conninfo],
        env=env, capture_output=True, text=True, timeout=seconds + 120, check=True)
    found = re.search(r"number of transactions actually processed: (\d+)", out.stdout)
    assert found is not None, out.stdout
    latencies = [int(line.split()[2]) for f in logdir.glob("pgbench_log*")
                 for line in f.read_text().splitlines() if line.strip()]
    return float(seconds), int(found.group(1)), latencies


@dataclass
class Tally:
    seconds: float = 0.0
    transactions: int = 0
    cpu: float = 0.0
    latencies: list[int] = field(default_factory=list)

    def result(self, with_cpu: bool) -> dict[str, Any]:
        lat = sorted(self.latencies)
        out: dict[str, Any] = {
            "tps": round(self.transactions / self.seconds, 1), "transactions": self.transactions,
            "p50_ms": round(statistics.median(lat) / 1000, 4),
            "p95_ms": round(lat[int(0.95 * (len(lat) - 1))] / 1000, 4)}
        if with_cpu:
            out["cpu_us_per_tx"] = round(max(self.cpu, 0.0) * 1e6 / self.transactions, 1)
        return out


def measure(path: Path_, password: str, seconds: int, logdir: Path, idle_cpu_per_s: float,
            tally: Tally) -> None:
    before = _cpu_seconds(*path.processes)
    started = time.monotonic()
    ran, count, latencies = run_pgbench(path.conninfo, password, seconds, logdir)
    elapsed = time.monotonic() - started
    if path.processes:
        tally.cpu += _cpu_seconds(*path.processes) - before - idle_cpu_per_s * elapsed
    tally.seconds += ran
    tally.transactions += count
    tally.latencies += latencies


def connect_p50_ms(path: Path_, password: str, count: int) -> float:
    """Median time from connect (TCP, TLS, SCRAM) until `SELECT 1` answers, one
    client at a time: what routing (and a handoff) adds per connection."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        with psycopg.connect(path.conninfo, password=password, connect_timeout=10) as c:
            c.execute("SELECT 1")
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


class Bouncer:
    """PgBouncer in transaction mode, TLS to clients and to the branch, as the postgres user."""

    def __init__(self, workdir: Path, port: int, backend_port: int, password: str,
                 cert: Path, key: Path) -> None:
        self.workdir, self.port = workdir, port
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "users.txt").write_text(f'"postgres" "{password}"\n')
        (workdir / "pgbouncer.ini").write_text(f"""[databases]
postgres = host=127.0.0.1 port={backend_port} dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {workdir}/users.txt
pool_mode = transaction
default_pool_size = {CLIENTS}
max_client_conn = 100
client_tls_sslmode = require
client_tls_cert_file = {cert}
client_tls_key_file = {key}
server_tls_sslmode = require
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
""")
        shutil.chown(workdir, "postgres")
        for f in workdir.iterdir():
            shutil.chown(f, "postgres")
        self.proc = subprocess.Popen(["setpriv", "--reuid=postgres", "--regid=postgres",
                                      "--init-groups", "pgbouncer", str(workdir / "pgbouncer.ini")])

    def wait(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.workdir / "pgbouncer.log").read_text()[-2000:])
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, connect_timeout=2,
                                     user="postgres", dbname="postgres", sslmode="require",
                                     password=(self.workdir / "users.txt").read_text()
                                     .split('"')[3]):
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError("pgbouncer did not answer")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def relayed_branch(d: Daemon, db: str) -> pb.CreateBranchResponse:
    """Branch "relayed" of `db` (made now, with its pgbench tables), whose postmaster
    takes no handoff: the endpoint relays its clients."""
    with d.stub() as s:
        made: pb.CreateBranchResponse = s.CreateBranch(
            pb.CreateBranchRequest(database=db, name="relayed"), timeout=120)
    path = socket_path(socket_dir(d.base / "run", made.branch.id), made.connection.port)
    assert path is not None
    path.unlink()
    return made


def paths(d: Daemon, conn: pb.Connection, db: str, domain: str, bouncer_port: int,
          bouncer_pid: int) -> list[Path_]:
    assert d.proc is not None
    # The relayed paths' bytes move in the relay process (endpoint_relay = "process"):
    # the C relay by SNI, TLS ended there too (OpenSSL in C) by options. A handed-off
    # connection costs them nothing once routed, and is measured against both.
    relay = relay_pid(d.base / "run" / "endpoint-relay.sock")
    relayed_branch(d, db)
    middle = (d.proc.pid,) if relay is None else (d.proc.pid, relay)
    ca = f"sslrootcert={conn.sslrootcert}"
    common = f"user=postgres dbname=postgres sslmode=verify-full {ca}"
    return [
        Path_("direct", f"host=127.0.0.1 port={conn.port} {common}", ()),
        Path_("endpoint", f"host={db}.{domain} hostaddr=127.0.0.1 port={d.endpoint_port} "
              f"{common}", middle),
        Path_("endpoint_relay", f"host={db}--relayed.{domain} hostaddr=127.0.0.1 "
              f"port={d.endpoint_port} {common}", middle),
        Path_("endpoint_options", f"host=127.0.0.1 port={d.endpoint_port} "
              f"options=endpoint={db} {common}", middle),
        Path_("pgbouncer", f"host=127.0.0.1 port={bouncer_port} user=postgres dbname=postgres "
              "sslmode=require", (bouncer_pid,)),
    ]


def run(d: Daemon, conn: pb.Connection, db: str, seconds: int, workdir: Path,
        domain: str = DOMAIN) -> dict[str, Any]:
    """Every path, in interleaved rounds, on a running daemon (endpoint_domain `domain`)
    and the main branch of its database `db`."""
    assert d.proc is not None
    subprocess.run([str(PGBIN / "pgbench"), "-i", "-q", "-s", "1",
                    f"host=127.0.0.1 port={conn.port} user=postgres dbname=postgres "
                    f"sslmode=require"], env={**os.environ, "PGPASSWORD": conn.password},
                   capture_output=True, check=True, timeout=300)
    idle_start = _cpu_seconds(d.proc.pid)
    time.sleep(2)
    idle_cpu_per_s = (_cpu_seconds(d.proc.pid) - idle_start) / 2
    tls = d.base / "state" / "postgres-tls"
    bouncer = Bouncer(workdir / "pgbouncer", free_port(), conn.port, conn.password,
                      tls / "server.crt", tls / "server.key")
    try:
        bouncer.wait()
        tallies: dict[str, Tally] = {}
        chosen = paths(d, conn, db, domain, bouncer.port, bouncer.proc.pid)
        # Interleaved rounds: load from elsewhere on a shared machine hits every path alike.
        for round_ in range(ROUNDS):
            for path in chosen:
                log(f"round {round_ + 1}/{ROUNDS} {path.name}: pgbench -S -c {CLIENTS} "
                    f"for {seconds // ROUNDS} s")
                measure(path, conn.password, seconds // ROUNDS, workdir, idle_cpu_per_s,
                        tallies.setdefault(path.name, Tally()))
        results = {p.name: tallies[p.name].result(bool(p.processes)) for p in chosen}
        for path in chosen:
            results[path.name]["connect_p50_ms"] = connect_p50_ms(
                path, conn.password, 10 if seconds < 10 else 100)
    finally:
        bouncer.stop()
    direct = results["direct"]
    for name, r in results.items():
        if name != "direct":
            r["tps_vs_direct"] = round(r["tps"] / direct["tps"], 3)
            r["p50_added_ms"] = round(r["p50_ms"] - direct["p50_ms"], 4)
            r["connect_added_ms"] = round(r["connect_p50_ms"] - direct["connect_p50_ms"], 2)
    return {"clients": CLIENTS, "seconds_per_path": seconds, "scale": 1,
            "idle_cygnetd_cpu_ms_per_s": round(idle_cpu_per_s * 1000, 2), "paths": results}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="3 s per path")
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    seconds = 3 if args.small else args.seconds
    with private_daemon("bep", 57600, "2G", unix_only=True,
                        settings=f'endpoint_domain = "{DOMAIN}"\n') as d:
        with d.stub() as s:
            made = s.CreateDatabase(pb.CreateDatabaseRequest(name="bench", size_class="small"),
                                    timeout=120)
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o755)  # pgbouncer runs as postgres
            result = run(d, made.connection, "bench", seconds, Path(tmp))
    emit("endpoint_small" if args.small else "endpoint", result)


if __name__ == "__main__":
    main()
