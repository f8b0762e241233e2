"""How fast the `cygnet` CLI answers, against the floors of the same run.

    .venv/bin/python -m benchmarks.bench_cli [--rounds 20]

Starts a throwaway cygnetd (unix socket only) on its own pool with two nano
databases, then times whole processes, interleaved round by round so that a
drift of the machine's speed hits every command alike:

- `cygnet --help` and `cygnet --version` (goal: <= 80 ms, no grpc imported);
- `cygnet db list` (a table, piped) and `cygnet db list --json`;
- a minimal Python gRPC client making the same ListDatabases call (goal: db list
  <= 1.3x of it: importing grpc is the floor every Python client pays);
- `zfs list` of the pool and `psql -c 'select 1'` on a branch, for scale.

Prints one JSON object (also kept in benchmarks/results/cli.json).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import emit, log, summary
from tests.harness import private_daemon

BIN = Path(sys.executable).parent
CYGNET = str(BIN / "cygnet")
MINIMAL = """\
import sys
import grpc
from cygnet.api.v1 import agent_pb2, agent_pb2_grpc
channel = grpc.insecure_channel("unix:" + sys.argv[1])
reply = agent_pb2_grpc.AgentStub(channel).ListDatabases(agent_pb2.ListDatabasesRequest(),
                                                         timeout=30)
print(len(reply.databases))
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one whole process."""
    cpu = _children_cpu()
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, env=env, timeout=60, check=False)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode()[-500:]}")
    return took, _children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CYGNET_", "PG"))}
    with private_daemon("bcli", 57600, "2G", unix_only=True) as d, \
            tempfile.TemporaryDirectory() as tmp:
        sock = ["--socket", str(d.socket)]
        for name in ("bench-a", "bench-b"):
            subprocess.run([CYGNET, *sock, "db", "create", name, "--size", "nano"],
                           check=True, capture_output=True, env=env)
        # psql's variables through the CLI itself; the password goes to a private pgpass.
        pg_env = {**env, "PGPASSFILE": str(Path(tmp) / "pgpass")}
        exports = subprocess.run([CYGNET, *sock, "connect", "bench-a", "--env"], check=True,
                                 capture_output=True, text=True, env=pg_env).stdout
        for line in exports.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            pg_env[key] = value.strip("'")
        minimal = Path(tmp) / "minimal_client.py"
        minimal.write_text(MINIMAL)
        commands = {
            "cygnet --help": ([CYGNET, "--help"], env),
            "cygnet --version": ([CYGNET, "--version"], env),
            "cygnet db list": ([CYGNET, *sock, "db", "list"], env),
            "cygnet db list --json": ([CYGNET, *sock, "db", "list", "--json"], env),
            "minimal grpc client": ([sys.executable, str(minimal), str(d.socket)], env),
            "zfs list": (["zfs", "list", "-H", "-o", "name,used", "-r", d.pool.name], env),
            "psql -c 'select 1'": (["psql", "-XAtc", "select 1"], pg_env),
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        log(f"{args.rounds} rounds of {len(commands)} commands")
        for round_ in range(args.rounds + 2):
            for name, (argv, cmd_env) in commands.items():
                took, used = run_once(argv, cmd_env)
                if round_ >= 2:  # two warm-up rounds
                    samples[name].append(took)
                    cpu[name].append(used)
    stats = {name: summary(s) for name, s in samples.items()}
    cpu_stats = {name: summary(s) for name, s in cpu.items()}
    floor = stats["minimal grpc client"]["p50"]
    cpu_floor = cpu_stats["minimal grpc client"]["p50"]
    result = {
        "rounds": args.rounds, "seconds": stats,
        # CPU time (user + system) is steadier than wall time on a busy machine.
        "cpu_seconds": cpu_stats,
        "ratios_p50": {
            "db list / minimal client": round(stats["cygnet db list"]["p50"] / floor, 3),
            "db list --json / minimal client":
                round(stats["cygnet db list --json"]["p50"] / floor, 3),
            "db list / minimal client (cpu)":
                round(cpu_stats["cygnet db list"]["p50"] / cpu_floor, 3),
        },
        "goals": {"--help p50 <= 0.080 s": stats["cygnet --help"]["p50"] <= 0.080,
                  "--version p50 <= 0.080 s": stats["cygnet --version"]["p50"] <= 0.080,
                  "db list <= 1.3x minimal client":
                      stats["cygnet db list"]["p50"] <= 1.3 * floor},
    }
    emit("cli", result)


if __name__ == "__main__":
    main()
