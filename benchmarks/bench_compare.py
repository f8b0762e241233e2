"""Branching against the alternatives: time to first query and disk per copy, by database size.

Every method runs in the same run on the same file-backed zfs-fuse pool:
a Cygnet branch and a new Cygnet database (gRPC API of a throwaway cygnetd),
CREATE DATABASE ... TEMPLATE (FILE_COPY, WAL_LOG), pg_dump | pg_restore into a
fresh cluster and pg_basebackup + start (on a plain cluster on that pool).
Then: how many idle nano branches fit in memory. Prints JSON; writes the JSON,
a markdown table and two PNG charts to --out. See benchmarks/README.md.

    .venv/bin/python -m benchmarks.bench_compare --publish   # 10 MB .. 4 GB (1 h+ on 2 cores)
    .venv/bin/python -m benchmarks.bench_compare --small     # smoke run, < 2 min
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, bench_daemon, emit, log
from benchmarks.compare import charts, report
from benchmarks.compare.density import measure_density
from benchmarks.compare.methods import Method
from benchmarks.compare.methods_cygnet import CygnetBranch, CygnetNewDatabase
from benchmarks.compare.methods_pg18 import CreateDatabaseClone
from benchmarks.compare.methods_postgres import (
    BaseBackup,
    CreateDatabaseCopy,
    DumpRestore,
    tool_version,
)
from benchmarks.compare.plain import PlainCluster
from benchmarks.compare.runner import measure_size
from tests.harness import WORK, Daemon, kill_postmasters_under

FIGURES = Path(__file__).resolve().parent / "figures"
ALL_METHODS = ["cygnet_branch", "cygnet_new_database", "createdb_file_copy",
               "createdb_wal_log", "pg_dump_restore", "pg_basebackup", "createdb_file_copy_clone"]
# Private ports: cygnetd's clusters take 61000-61199, the plain clusters 61500-61502.
DAEMON_PORT_MIN, PLAIN_PORT = 61000, 61500
GB = 1024 ** 3


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10,100,1024,4096",
                   help="database sizes in MB, comma-separated (pgbench scale = MB/15); "
                        "empty: density only")
    p.add_argument("--methods", default=",".join(ALL_METHODS),
                   help="comma-separated subset of: " + ", ".join(ALL_METHODS))
    p.add_argument("--repeat", type=int, default=5, help="copies per method and size")
    p.add_argument("--repeat-large", type=int, default=3,
                   help="copies per method for sizes of 1 GB and more")
    p.add_argument("--density", type=int, default=50, help="idle branches to run (0: skip)")
    p.add_argument("--density-probes", type=int, default=10,
                   help="branch-ready samples taken with --density branches running")
    p.add_argument("--reserve-gb", type=float, default=4.0,
                   help="stop adding idle branches before MemAvailable drops below this")
    p.add_argument("--small", action="store_true",
                   help="10 and 30 MB, 1 copy, 3 idle branches: checks the scripts (< 2 min)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where JSON, table and PNGs go")
    p.add_argument("--replot", type=Path, nargs="+", metavar="JSON",
                   help="no run: redraw the table and charts of saved results; several "
                        "runs of different sizes are merged, each size kept whole")
    p.add_argument("--publish", action="store_true",
                   help="also copy the JSON, table and PNGs to benchmarks/figures/")
    args = p.parse_args()
    if args.small:
        args.sizes, args.repeat, args.density, args.density_probes = "10,30", 1, 3, 2
    args.size_list = [int(x) for x in args.sizes.split(",") if x]
    args.method_list = [x for x in args.methods.split(",") if x]
    unknown = set(args.method_list) - set(ALL_METHODS)
    if unknown:
        p.error(f"unknown methods: {', '.join(sorted(unknown))}")
    return args


def build_methods(keys: list[str], d: Daemon, workdir: Path) -> list[Method]:
    made: dict[str, Method] = {
        "cygnet_branch": CygnetBranch(d), "cygnet_new_database": CygnetNewDatabase(d),
        "createdb_file_copy": CreateDatabaseCopy("FILE_COPY"),
        "createdb_wal_log": CreateDatabaseCopy("WAL_LOG"),
        "pg_dump_restore": DumpRestore(workdir, PLAIN_PORT + 1),
        "pg_basebackup": BaseBackup(workdir, PLAIN_PORT + 1),
        "createdb_file_copy_clone": CreateDatabaseClone(workdir, PLAIN_PORT + 2)}
    return [made[k] for k in keys]


def pool_size(sizes: list[int]) -> str:
    # Sources in Cygnet and in the plain cluster, one copy plus WAL_LOG's WAL
    # and the dump's fresh cluster: about 4x the largest, plus room for the rest.
    return f"{max(4, (4 * max(sizes, default=0) * 1024 ** 2) // GB + 6)}G"


def run_all(args: argparse.Namespace, result: dict[str, Any]) -> None:
    with bench_daemon(pool_size(args.size_list), port_min=DAEMON_PORT_MIN) as d:
        log(f"pool {d.pool.name} ({d.pool.image}), cygnetd in {d.base}")
        plain_root = d.mount_root / "plain"
        subprocess.run(["zfs", "create", "-o", f"mountpoint={plain_root}",
                        f"{d.pool.name}/plain"], check=True, capture_output=True)
        try:
            plain = PlainCluster(plain_root / "source", PLAIN_PORT)
            plain.initdb()
            plain.start()
            methods = build_methods(args.method_list, d, plain_root)
            result["methods"] = {m.key: m.label for m in methods}
            for mb in args.size_list:
                repeat = args.repeat_large if mb >= 1024 else args.repeat
                result["sizes"].append(measure_size(d, plain, methods, mb, repeat))
            plain.stop()
            if args.density:
                log(f"density: up to {args.density} idle nano branches")
                result["density"] = measure_density(
                    d, args.density, args.density_probes, int(args.reserve_gb * GB),
                    idle_wait=2.0 if args.small else 10.0)
        finally:
            kill_postmasters_under(plain_root)


def write_outputs(args: argparse.Namespace, result: dict[str, Any]) -> None:
    name = "compare_small" if args.small else "compare"
    m = result["machine"]
    subtitle = (f"{m['cores']} cores, {m['memory_bytes'] / GB:.0f} GB RAM, "
                f"{m['filesystem']}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    charts.time_chart(result, out / f"{name}_time.png", subtitle)
    charts.disk_chart(result, out / f"{name}_disk.png", subtitle)
    text = report.table(result) + report.density_lines(result.get("density"))
    (out / f"{name}.md").write_text(text)
    result["summary_table"] = text
    emit(name, result, out)
    if args.publish:
        FIGURES.mkdir(exist_ok=True)
        for suffix in ("_time.png", "_disk.png", ".md", ".json"):
            shutil.copy(out / f"{name}{suffix}", FIGURES / f"{name}{suffix}")


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first run, plus the sizes of later runs; every size keeps its own round robin."""
    merged = runs[0]
    merged["merged_runs"] = [{"sizes": [s["label"] for s in run["sizes"]],
                              "density": bool(run.get("density")),
                              "machine": run["machine"]} for run in runs]
    for extra in runs[1:]:
        if extra["methods"] != merged["methods"]:
            raise SystemExit("--replot: runs with different methods cannot be merged")
        merged["sizes"].extend(extra["sizes"])
        if extra.get("density"):  # a later density run (e.g. --sizes "") replaces it
            merged["density"] = extra["density"]
    merged["sizes"].sort(key=lambda s: s["megabytes"])
    return merged


def main() -> None:
    args = parse_args()
    # A SIGTERM (a CI timeout, kill PID) unwinds like Ctrl-C, so the finally
    # blocks stop every cluster and destroy the pool.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.replot:
        saved = merge_runs([json.loads(p.read_text()) for p in args.replot])
        args.small = saved["small"]
        write_outputs(args, saved)
        return
    result: dict[str, Any] = {
        "benchmark": "compare", "small": args.small, "machine": report.machine(WORK),
        "versions": {"postgres": tool_version("postgres"), "pg_dump": tool_version("pg_dump"),
                     "pg_basebackup": tool_version("pg_basebackup"),
                     "pgbench": tool_version("pgbench")},
        "methods": {}, "sizes": []}
    run_all(args, result)
    write_outputs(args, result)


if __name__ == "__main__":
    main()
