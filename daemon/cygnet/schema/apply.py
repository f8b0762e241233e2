"""Runs a plan on a database: statements before, inside and after one transaction.

The transactional part is all or nothing. Statements outside it run one by
one, in order; when one fails, the result says what ran, what failed and
what did not run. An index a failed CREATE INDEX CONCURRENTLY left invalid is
dropped, so that running the merge again builds it from the start.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from cygnet.schema.ddl import AFTER_TX, BEFORE_TX, IN_TX, Stmt

_CIC = re.compile(r"CREATE (?:UNIQUE )?INDEX CONCURRENTLY (\S+) ON")


@dataclass
class Applied:
    ok: bool = True
    stage: str = ""  # where it failed: before | transaction | after
    error: str = ""
    failed: str = ""  # the statement that failed
    done_outside: list[str] = field(default_factory=list)  # ran outside the transaction
    not_run: list[str] = field(default_factory=list)
    committed: bool = False
    seconds: float = 0.0

    def recovery(self) -> str:
        """What state a failure left, in words (empty when all went well)."""
        if self.ok:
            return ""
        done = f"{len(self.done_outside)} statement(s) outside the transaction ran"
        if self.stage == "after":
            return (f"The transaction was committed and {done}; then {self.failed!r} failed "
                    f"({self.error}). {len(self.not_run)} statement(s) did not run. Any "
                    "invalid index it left was dropped. Merging again runs what is missing.")
        if self.stage == "transaction":
            return (f"The transaction was rolled back: the schema is as before, except that "
                    f"{done} (ALTER TYPE ... ADD VALUE, harmless to keep).")
        return f"{done} before {self.failed!r} failed ({self.error}); nothing else ran."


def _error(exc: psycopg.Error) -> str:
    diag = exc.diag
    return (diag.message_primary or str(exc)).strip()


def apply(conn: psycopg.Connection[Any], stmts: list[Stmt], prefix: list[str] | None = None
          ) -> Applied:
    """Runs `stmts` (and `prefix`, first inside the transaction) on an autocommit connection."""
    started = time.monotonic()
    out = Applied()
    before = [s.sql for s in stmts if s.when == BEFORE_TX]
    inside = [*(prefix or []), *(s.sql for s in stmts if s.when == IN_TX)]
    after = [s.sql for s in stmts if s.when == AFTER_TX]
    conn.autocommit = True
    if _outside(conn, before, "before", out):
        try:
            with conn.transaction():
                conn.execute("SET LOCAL check_function_bodies = false")
                for sql in inside:
                    out.failed = sql
                    conn.execute(sql)
            out.committed, out.failed = True, ""
        except psycopg.Error as exc:
            out.ok, out.stage, out.error = False, "transaction", _error(exc)
            out.not_run = after
        if out.committed:
            _outside(conn, after, "after", out)
    out.seconds = time.monotonic() - started
    return out


def _outside(conn: psycopg.Connection[Any], stmts: list[str], stage: str, out: Applied) -> bool:
    for i, sql in enumerate(stmts):
        try:
            conn.execute(sql)
        except psycopg.Error as exc:
            out.ok, out.stage, out.error, out.failed = False, stage, _error(exc), sql
            out.not_run = stmts[i + 1:]
            m = _CIC.match(sql)
            if m:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(f"DROP INDEX IF EXISTS {m.group(1)}")
            return False
        out.done_outside.append(sql)
    return True
