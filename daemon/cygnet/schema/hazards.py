"""Hazards of a plan: what it costs or risks beyond the DDL text (after pg-schema-diff).

- rewrite: the table is rewritten under an ACCESS EXCLUSIVE lock;
- scan: the table is read in full (validation, index build) while locked;
- drops-data: a table or column and the data in it go away;
- type-may-fail: a type change whose cast can fail on existing values;
- rename: a drop and a create that look like a rename (give a rename hint);
- non-transactional: a statement that runs outside the transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cygnet.schema.ddl import AFTER_TX, BEFORE_TX
from cygnet.schema.model import Catalog, Column, Constraint, Index, Kind, Table
from cygnet.schema.plan import ALTER, CREATE, DROP, Change, Plan

# Above this a lock held for a rewrite or a scan is called out as long.
BIG_TABLE_BYTES = 64 * 1024 * 1024

_WIDENING = {("smallint", "integer"), ("smallint", "bigint"), ("integer", "bigint"),
             ("real", "double precision"), ("smallint", "numeric"), ("integer", "numeric"),
             ("bigint", "numeric")}
_VARCHAR = re.compile(r"character varying\((\d+)\)")
_VOLATILE = ("nextval(", "random(", "clock_timestamp(", "gen_random_uuid(", "uuid_generate")


@dataclass(frozen=True)
class Hazard:
    kind: str
    object: str
    message: str


def _size(catalog: Catalog, table_key: str) -> str:
    rows, size = catalog.sizes.get(table_key, (0, 0))
    big = " (a big table: writes wait for it)" if size >= BIG_TABLE_BYTES else ""
    return f"~{rows} rows, {size // (1024 * 1024)} MiB{big}"


def _cast_is_free(old: str, new: str) -> bool:
    """No rewrite: varchar to a longer varchar or to text."""
    o, n = _VARCHAR.fullmatch(old), _VARCHAR.fullmatch(new)
    if o and n:
        return int(n.group(1)) >= int(o.group(1))
    return old.startswith("character varying") and new == "text"


def _cast_cannot_fail(old: str, new: str) -> bool:
    return (_cast_is_free(old, new) or (old, new) in _WIDENING or new == "text"
            or (old.startswith("numeric") and new == "numeric"))


def _column(c: Change, o: Column | None, n: Column | None, old: Catalog, new: Catalog
            ) -> list[Hazard]:
    out = []
    col = n or o
    assert col is not None
    name = col.ident
    table = f"{Kind.TABLE}:{col.schema}.{col.table}"
    if c.action == DROP and table in new.objects and not col.inherited:
        out.append(Hazard("drops-data", name, f"drops column {name} and the data in it"))
    if c.action == "replace" and table in new.objects and table in old.objects:
        out.append(Hazard("drops-data", name, f"column {name} is dropped and added again "
                          f"(its {'type' if c.because else 'generated expression'} changed): "
                          "its data is lost"))
    if c.action == ALTER and o is not None and n is not None:
        if o.type != n.type and not n.inherited:
            if not _cast_is_free(o.type, n.type):
                out.append(Hazard("rewrite", name, f"{o.type} -> {n.type} rewrites "
                                  f"{o.table} under an exclusive lock, {_size(old, table)}"))
            if not _cast_cannot_fail(o.type, n.type):
                out.append(Hazard("type-may-fail", name, f"{o.type} -> {n.type} fails if a "
                                  "value does not convert"))
        if n.not_null and not o.not_null:
            out.append(Hazard("scan", name, f"SET NOT NULL reads all of {o.table} under an "
                              f"exclusive lock, {_size(old, table)}"))
    filled = n is not None and (any(v in n.default for v in _VOLATILE) or bool(n.generated)
                                or n.identity is not None)
    if c.action == CREATE and table in old.objects and filled:
        out.append(Hazard("rewrite", name, f"adding {name} fills it in every row of "
                          f"{col.table}: a rewrite, {_size(old, table)}"))
    return out


def _renames(changes: list[Change]) -> list[Hazard]:
    """A dropped and a created column of one table (or table) with the same shape."""
    out = []
    dropped = [c.old for c in changes if c.action == DROP and isinstance(c.old, Column)]
    created = [c.new for c in changes if c.action == CREATE and isinstance(c.new, Column)]
    for d in dropped:
        for n in created:
            if (d.schema, d.table, d.type) == (n.schema, n.table, n.type):
                out.append(Hazard("rename", d.ident, f"{d.ident} is dropped and "
                                  f"{n.ident} created with the same type: if it is a rename, "
                                  f"give --rename {d.ident}={n.name} to keep the data"))
    tables_d = [c.old for c in changes if c.action == DROP and isinstance(c.old, Table)]
    tables_c = [c.new for c in changes if c.action == CREATE and isinstance(c.new, Table)]
    for dt in tables_d:
        for nt in tables_c:
            if dt.schema == nt.schema:
                out.append(Hazard("rename", dt.ident, f"table {dt.ident} is dropped and "
                                  f"{nt.ident} created: if it is a rename, give --rename "
                                  f"{dt.ident}={nt.name} to keep the data"))
    return out


def hazards(plan: Plan, old: Catalog, new: Catalog) -> list[Hazard]:
    out: list[Hazard] = []
    for c in plan.changes:
        obj = c.old or c.new
        if isinstance(obj, Column):
            o = c.old if isinstance(c.old, Column) else None
            n = c.new if isinstance(c.new, Column) else None
            out += _column(c, o, n, old, new)
        elif isinstance(obj, Table) and c.action in (DROP, "replace"):
            verb = "drops" if c.action == DROP else "drops and recreates"
            out.append(Hazard("drops-data", obj.ident, f"{verb} table {obj.ident} and its "
                              f"rows, {_size(old, obj.key)}"))
        elif isinstance(obj, (Constraint, Index)) and c.action in (CREATE, "replace"):
            table = f"{Kind.TABLE}:{obj.schema}.{obj.table}"
            if table in old.objects and obj.table and not (
                    isinstance(obj, Constraint) and obj.definition.endswith("NOT VALID")):
                what = "builds the index" if isinstance(obj, Index) else "validates every row"
                out.append(Hazard("scan", obj.ident, f"{what} of {obj.table} while writes "
                                  f"wait, {_size(old, table)}"))
    for step in plan.steps:
        for s in step.stmts:
            if s.when in (BEFORE_TX, AFTER_TX):
                out.append(Hazard("non-transactional", step.key, f"runs outside the "
                                  f"transaction ({s.when} it): {s.sql.splitlines()[0][:120]}"))
    return out + _renames(plan.changes)
