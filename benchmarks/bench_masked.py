"""Masked branches: time until one is ready, the first (which builds the masked
snapshot) and those after it (clones of that snapshot), against a plain branch
of the same database, measured in the same run.

    .venv/bin/python -m benchmarks.bench_masked              # 200,000 users
    .venv/bin/python -m benchmarks.bench_masked --small      # 5,000 users, 1 round

Starts a throwaway cygnetd on its own file-backed zfs-fuse pool, makes one
database with `users` (name, email, phone, ssn, note) and `orders` (an email
per order) and masking rules for six columns. Each timing is client-side, from
the call to the first `select 1` over the branch's own connection string:

- `plain_branch_seconds`: CreateBranch (the baseline);
- `masked_first_seconds`: CreateMaskedBranch with refresh (snapshot, clone,
  mask, VACUUM FULL, clean stop, pg_resetwal, snapshot, then the clone);
- `masked_next_seconds`: CreateMaskedBranch reusing the masked snapshot.

Prints JSON (and keeps it in benchmarks/results).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, emit, log, summary, wait_query
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import schema_pb2 as spb
from cygnet.api.v1 import schema_pb2_grpc
from tests.harness import Daemon, private_daemon, query

RULES = """
[databases.postgres]
"users.name" = "name"
"users.email" = "email"
"users.phone" = "phone"
"users.ssn" = "hash"
"users.note" = "null"
"orders.email" = "email"
"""


def _load(conn: pb.Connection, rows: int) -> None:
    query(conn, "CREATE TABLE users (id int PRIMARY KEY, name text, email text UNIQUE, "
                "phone text, ssn text, note text);"
                f"INSERT INTO users SELECT g, 'name ' || g, 'u' || g || '@corp.com', "
                f"'+44 20 ' || g, 'ssn-' || g, repeat('n', 40) FROM generate_series(1, {rows}) g;"
                "CREATE TABLE orders (id int PRIMARY KEY, email text, total numeric);"
                f"INSERT INTO orders SELECT g, 'u' || (g % {rows} + 1) || '@corp.com', g "
                f"FROM generate_series(1, {rows * 2}) g; ANALYZE")


def _ready(started: float, conn: pb.Connection) -> float:
    wait_query(conn.uri)
    return time.perf_counter() - started


def run(d: Daemon, rows: int, rounds: int) -> dict[str, Any]:
    schema = schema_pb2_grpc.SchemaStub(d.channel())  # type: ignore[no-untyped-call]
    plain, first, following, builds = [], [], [], []
    with d.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name="shop", size_class="nano"),
                              timeout=120)
        _load(db.connection, rows)
        schema.SetMaskingRules(spb.SetMaskingRulesRequest(database="shop", rules=RULES),
                               timeout=120)
        for i in range(rounds):
            started = time.perf_counter()
            br = s.CreateBranch(pb.CreateBranchRequest(database="shop", name=f"plain{i}"),
                                timeout=300)
            plain.append(_ready(started, br.connection))
            started = time.perf_counter()
            m = schema.CreateMaskedBranch(spb.CreateMaskedBranchRequest(
                database="shop", name=f"first{i}", refresh=True), timeout=600)
            first.append(_ready(started, m.connection))
            builds.append(m.build_seconds)
            assert m.built
            started = time.perf_counter()
            m = schema.CreateMaskedBranch(spb.CreateMaskedBranchRequest(
                database="shop", name=f"next{i}"), timeout=300)
            following.append(_ready(started, m.connection))
            assert not m.built
            log(f"round {i}: plain {plain[-1]:.2f}s, masked first {first[-1]:.2f}s, "
                f"next {following[-1]:.2f}s")
    return {"users": rows, "orders": rows * 2, "rounds": rounds,
            "plain_branch_seconds": summary(plain),
            "masked_first_seconds": summary(first),
            "masked_next_seconds": summary(following),
            "masked_first_server_side_seconds": summary(builds),
            "masked_next_over_plain_p50": round(
                summary(following)["p50"] - summary(plain)["p50"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="5,000 users, 1 round")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows, rounds = (5_000, 1) if args.small else (args.rows, args.rounds)
    with private_daemon("bench-masked-", 59100, "4G") as d:
        result = run(d, rows, rounds)
    emit("masked_small" if args.small else "masked", result, args.out)


if __name__ == "__main__":
    main()
