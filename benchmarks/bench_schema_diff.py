"""Schema diff of a 1,000-table schema, and the overhead of a merge's rehearsal.

Part 1 (one Postgres cluster, no daemon): database A has N tables (5 columns,
a primary key, a check, an index and a comment each) and N/10 views; B is a
copy of A with 10% of its tables changed (a column added, a type widened, an
index added), N/50 tables dropped and N/50 added. Timed: the whole diff
(read both catalogs + plan), against `pg_dump --schema-only` of both, the
floor any dump-based diff tool starts from, measured in the same run. The
script is then applied to A and the dumps compared (the test oracle).

Part 2 (a cygnetd on its own pool): a database of N/10 tables and a branch
with a few changes; MergeSchema with dry_run (base and rehearsal servers on
temporary clones) against SchemaDiff of the same two branches: the
difference is the rehearsal's overhead.

    .venv/bin/python -m benchmarks.bench_schema_diff            # 1,000 tables
    .venv/bin/python -m benchmarks.bench_schema_diff --small    # 100 tables, part 1 only
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, emit, summary
from cygnet.postgres.initdb import init_cluster
from cygnet.postgres.layout import ClusterLayout
from cygnet.postgres.versions import resolve_version
from cygnet.schema.plan import plan
from tests.integration.pg_helpers import PgEnv, make_base
from tests.integration.schema_helpers import SchemaCluster

TARGET_SECONDS = 2.0


def tables_sql(n: int) -> list[str]:
    out = []
    for i in range(n):
        out += [f"CREATE TABLE t{i} (id bigint PRIMARY KEY, a integer NOT NULL DEFAULT 0, "
                f"b text, c timestamptz DEFAULT now(), d numeric(12,2) CHECK (d >= 0))",
                f"CREATE INDEX t{i}_b ON t{i} (b) WHERE b IS NOT NULL",
                f"COMMENT ON TABLE t{i} IS 'table {i}'"]
    out += [f"CREATE VIEW v{i} AS SELECT id, a, b FROM t{i} WHERE a > 0"
            for i in range(0, n, 10)]
    return out


def changes_sql(n: int) -> list[str]:
    out = []
    for i in range(1, n, 10):
        out += [f"ALTER TABLE t{i} ADD COLUMN e jsonb", f"ALTER TABLE t{i} ALTER COLUMN a "
                f"TYPE bigint", f"CREATE INDEX t{i}_c ON t{i} (c)"]
    out += [f"DROP TABLE t{i}" for i in range(3, n, 50)]
    out += [f"CREATE TABLE n{i} (id int PRIMARY KEY, x text)" for i in range(0, n, 50)]
    return out


def run_batch(sc: SchemaCluster, db: str, stmts: list[str]) -> None:
    """In transactions of 200 statements: one would run out of lock slots."""
    with sc.connect(db, autocommit=False) as c:
        for i, s in enumerate(stmts, 1):
            c.execute(s)
            if i % 200 == 0:
                c.commit()
        c.commit()


def diff_part(n: int, repeat: int) -> dict[str, Any]:
    _, bindir = resolve_version("")
    tpl = make_base("/var/tmp/cygnet-pgtpl-")
    layout = ClusterLayout(tpl)
    asyncio.run(init_cluster(bindir, layout.pgdata, layout.log_file))
    env = PgEnv(make_base("/var/tmp/cygnet-pgtest-"), make_base("/tmp/cygs-"), layout.pgdata,
                bindir)
    try:
        cluster = env.new_cluster("bench")
        cluster.start()
        sc = SchemaCluster(cluster)
        sc.make_fast()
        a = sc.new_db("a")
        run_batch(sc, a, tables_sql(n))
        b = sc.new_db("b", template=a)
        run_batch(sc, b, changes_sql(n))
        diffs, dumps, reads = [], [], []
        p = None
        for _ in range(repeat):
            started = time.perf_counter()
            # As cygnetd reads them: both at once, each on its own connection and thread.
            with ThreadPoolExecutor(2) as pool:
                ca, cb = pool.map(sc.catalog, (a, b))
            read = time.perf_counter() - started
            p = plan(ca, cb)
            diffs.append(time.perf_counter() - started)
            reads.append(read)
            started = time.perf_counter()
            sc.dump(a), sc.dump(b)
            dumps.append(time.perf_counter() - started)
        assert p is not None
        started = time.perf_counter()
        sc.run_script(a, p.script())
        applied = time.perf_counter() - started
        same = sc.dump(a) == sc.dump(b)
        objects = len(ca.objects)
        return {"tables": n, "objects_in_a": objects, "changes": len(p.changes),
                "statements": len(p.statements), "diff_seconds": summary(diffs),
                "read_both_catalogs_seconds": summary(reads),
                "baseline_pg_dump_both_seconds": summary(dumps),
                "apply_script_seconds": round(applied, 3), "oracle_dumps_equal": same,
                "target_seconds": TARGET_SECONDS,
                "within_target": max(diffs) <= TARGET_SECONDS}
    finally:
        env.cleanup()
        for path in (env.base, env.socket_base, tpl):
            shutil.rmtree(path, ignore_errors=True)


def merge_part(n: int, repeat: int) -> dict[str, Any]:
    from cygnet.api.v1 import agent_pb2 as pb
    from cygnet.api.v1 import schema_pb2 as spb
    from cygnet.api.v1 import schema_pb2_grpc
    from tests.harness import private_daemon, query

    with private_daemon("bench-schema-", 57600, "4G") as d:
        with d.stub() as s:
            db = s.CreateDatabase(pb.CreateDatabaseRequest(name="shop", size_class="nano"),
                                  timeout=120)
            query(db.connection, ";".join(tables_sql(n)))
            br = s.CreateBranch(pb.CreateBranchRequest(database="shop", name="dev"),
                                timeout=120)
        query(br.connection, ";".join(changes_sql(n)))
        stub = schema_pb2_grpc.SchemaStub(d.channel())  # type: ignore[no-untyped-call]
        main, dev = pb.BranchRef(database="shop"), pb.BranchRef(database="shop", name="dev")
        diffs, merges, rehearsals = [], [], []
        for _ in range(repeat):
            started = time.perf_counter()
            stub.SchemaDiff(spb.SchemaDiffRequest(a=main, b=dev), timeout=300)
            diffs.append(time.perf_counter() - started)
            started = time.perf_counter()
            out = stub.MergeSchema(spb.MergeSchemaRequest(source=dev, target=main,
                                                          dry_run=True), timeout=600)
            merges.append(time.perf_counter() - started)
            assert out.outcome == "dry-run", out.outcome
            rehearsals.append(out.rehearsal.duration_seconds)
        return {"tables": n, "baseline_schema_diff_seconds": summary(diffs),
                "merge_dry_run_seconds": summary(merges),
                "rehearsal_ddl_seconds": summary(rehearsals),
                "overhead_seconds_p50": round(summary(merges)["p50"] - summary(diffs)["p50"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="100 tables, the diff part only")
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-merge", action="store_true", help="the diff part only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    n, repeat = (100, 2) if args.small else (args.tables, args.repeat)
    result: dict[str, Any] = {"diff": diff_part(n, repeat)}
    if not args.small and not args.no_merge:
        try:
            result["merge_rehearsal"] = merge_part(n // 10, 3)
        except Exception as exc:  # keep the diff's figures: say what went wrong instead
            result["merge_rehearsal"] = {"error": f"{type(exc).__name__}: {exc}"}
    result["postgres"] = subprocess.run(
        [str(resolve_version("")[1] / "postgres"), "--version"], capture_output=True,
        text=True, check=False).stdout.strip()
    emit("schema_diff_small" if args.small else "schema_diff", result, args.out)


if __name__ == "__main__":
    main()
