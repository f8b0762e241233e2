"""DDL for one object: how to create it, drop it, or change it in place.

`alter` returns None when the change cannot be made in place; the plan then
drops and recreates the object (and what depends on it). Every name in the
DDL was quoted by the server (quote_ident), so nothing is quoted here except
string literals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cygnet.schema.model import (
    AnyObj,
    Column,
    Comment,
    Composite,
    Constraint,
    Domain,
    Enum,
    Extension,
    Function,
    Grant,
    Identity,
    Index,
    MatView,
    Policy,
    Privilege,
    Schema,
    Sequence,
    SequenceOwner,
    Table,
    Trigger,
    View,
)

# When a statement runs: inside the one transaction, or outside it, before
# (ALTER TYPE ... ADD VALUE, whose new value the transaction may use) or after
# (CREATE INDEX CONCURRENTLY).
IN_TX, BEFORE_TX, AFTER_TX = "transaction", "before", "after"


@dataclass(frozen=True)
class Stmt:
    sql: str
    when: str = IN_TX


def literal(text: str) -> str:
    """A standard SQL string literal (standard_conforming_strings is on since 9.1)."""
    return "'" + text.replace("'", "''") + "'"


def _seq_options(data_type: str, start: int, inc: int, lo: int, hi: int, cache: int,
                 cycle: bool) -> str:
    as_type = f"AS {data_type} " if data_type else ""
    return (f"{as_type}START WITH {start} INCREMENT BY {inc} MINVALUE {lo} "
            f"MAXVALUE {hi} CACHE {cache} {'CYCLE' if cycle else 'NO CYCLE'}")


def _identity(ident: Identity) -> str:
    how = "ALWAYS" if ident.always else "BY DEFAULT"
    # No AS type: an identity sequence has its column's type.
    opts = _seq_options("", ident.start, ident.increment, ident.min_value, ident.max_value,
                        ident.cache, ident.cycle)
    return f"GENERATED {how} AS IDENTITY (SEQUENCE NAME {ident.sequence} {opts})"


def column_def(col: Column) -> str:
    parts = [col.column_sql, col.type]
    if col.collation:
        parts.append(f"COLLATE {col.collation}")
    if col.generated:
        parts.append(f"GENERATED ALWAYS AS ({col.generated}) STORED")
    if col.default:
        parts.append(f"DEFAULT {col.default}")
    if col.identity is not None:
        parts.append(_identity(col.identity))
    if col.not_null:
        parts.append("NOT NULL")
    return " ".join(parts)


def create_table(table: Table, columns: list[Column]) -> list[Stmt]:
    prefix = "CREATE UNLOGGED TABLE" if table.unlogged else "CREATE TABLE"
    if table.partition_of:
        head = f"{prefix} {table.sql} PARTITION OF {table.partition_of} {table.partition_bound}"
    else:
        body = ",\n    ".join(column_def(c) for c in columns)
        head = f"{prefix} {table.sql} (\n    {body}\n)" if columns else f"{prefix} {table.sql} ()"
    if table.partitioned:
        head += f" PARTITION BY {table.partition_key}"
    if table.options:
        head += f" WITH ({', '.join(table.options)})"
    out = [Stmt(head)]
    if table.rls:
        out.append(Stmt(f"ALTER TABLE {table.sql} ENABLE ROW LEVEL SECURITY"))
    if table.force_rls:
        out.append(Stmt(f"ALTER TABLE {table.sql} FORCE ROW LEVEL SECURITY"))
    return out


def _options(relation: str, old: tuple[str, ...], new: tuple[str, ...]) -> list[Stmt]:
    out = []
    gone = sorted({o.split("=", 1)[0] for o in old} - {n.split("=", 1)[0] for n in new})
    if gone:
        out.append(Stmt(f"ALTER {relation} RESET ({', '.join(gone)})"))
    changed = [n for n in new if n not in old]
    if changed:
        out.append(Stmt(f"ALTER {relation} SET ({', '.join(changed)})"))
    return out


def alter_table(old: Table, new: Table) -> list[Stmt] | None:
    if (old.partitioned, old.partition_key) != (new.partitioned, new.partition_key):
        return None
    t = new.sql
    out: list[Stmt] = []
    if (old.partition_of, old.partition_bound) != (new.partition_of, new.partition_bound):
        if old.partition_of:
            out.append(Stmt(f"ALTER TABLE {old.partition_of} DETACH PARTITION {t}"))
        if new.partition_of:
            out.append(Stmt(f"ALTER TABLE {new.partition_of} ATTACH PARTITION {t} "
                            f"{new.partition_bound}"))
    if old.unlogged != new.unlogged:
        out.append(Stmt(f"ALTER TABLE {t} SET {'UNLOGGED' if new.unlogged else 'LOGGED'}"))
    if old.rls != new.rls:
        out.append(Stmt(f"ALTER TABLE {t} {'ENABLE' if new.rls else 'DISABLE'} ROW LEVEL SECURITY"))
    if old.force_rls != new.force_rls:
        force = "FORCE" if new.force_rls else "NO FORCE"
        out.append(Stmt(f"ALTER TABLE {t} {force} ROW LEVEL SECURITY"))
    out += _options(f"TABLE {t}", old.options, new.options)
    return out


def _cast(old: Column, new: Column) -> str:
    """The USING expression: a direct cast, or through text to or from a type of the
    user's (schema-qualified, as names are read with an empty search_path), which
    seldom has a direct cast but always text input and output."""
    through = "::text" if "." in old.type or "." in new.type else ""
    return f"{new.column_sql}{through}::{new.type}"


def alter_column(old: Column, new: Column) -> list[Stmt] | None:
    if old.inherited and new.inherited:
        return []  # the parent's change reaches it
    if old.generated != new.generated:
        return None
    pre = f"ALTER TABLE {new.table_sql} ALTER COLUMN {new.column_sql}"
    out: list[Stmt] = []
    retyped = (old.type, old.collation) != (new.type, new.collation)
    if old.default and (retyped or old.default != new.default):
        out.append(Stmt(f"{pre} DROP DEFAULT"))
    if retyped:
        coll = f" COLLATE {new.collation}" if new.collation else ""
        out.append(Stmt(f"{pre} TYPE {new.type}{coll} USING {_cast(old, new)}"))
    if new.default and (retyped or old.default != new.default):
        out.append(Stmt(f"{pre} SET DEFAULT {new.default}"))
    # NOT NULL comes before an identity is added, and goes after one is dropped.
    if new.not_null and not old.not_null:
        out.append(Stmt(f"{pre} SET NOT NULL"))
    if old.identity != new.identity:
        if old.identity is not None:
            out.append(Stmt(f"{pre} DROP IDENTITY"))
        if new.identity is not None:
            out.append(Stmt(f"{pre} ADD {_identity(new.identity)}"))
    if old.not_null and not new.not_null:
        out.append(Stmt(f"{pre} DROP NOT NULL"))
    return out


def _enum_additions(old: Enum, new: Enum) -> list[Stmt] | None:
    """ADD VALUE for each new label, if the old labels keep their order."""
    if [v for v in new.values if v in old.values] != list(old.values):
        return None
    out = []
    for i, value in enumerate(new.values):
        if value in old.values:
            continue
        later = [v for v in new.values[i + 1:] if v in old.values]
        where = f" BEFORE {literal(later[0])}" if later else (
            f" AFTER {literal(new.values[i - 1])}" if i else "")
        out.append(Stmt(f"ALTER TYPE {new.sql} ADD VALUE {literal(value)}{where}", BEFORE_TX))
    return out


def _domain(d: Domain) -> list[Stmt]:
    parts = [f"CREATE DOMAIN {d.sql} AS {d.base_type}"]
    if d.collation:
        parts.append(f"COLLATE {d.collation}")
    if d.default:
        parts.append(f"DEFAULT {d.default}")
    if d.not_null:
        parts.append("NOT NULL")
    parts += [f"CONSTRAINT {c.sql} {c.definition}" for c in d.checks]
    return [Stmt(" ".join(parts))]


def _alter_domain(old: Domain, new: Domain) -> list[Stmt] | None:
    if (old.base_type, old.collation) != (new.base_type, new.collation):
        return None
    pre = f"ALTER DOMAIN {new.sql}"
    out = []
    if old.default != new.default:
        out.append(Stmt(f"{pre} SET DEFAULT {new.default}" if new.default
                        else f"{pre} DROP DEFAULT"))
    if old.not_null != new.not_null:
        out.append(Stmt(f"{pre} {'SET' if new.not_null else 'DROP'} NOT NULL"))
    out += [Stmt(f"{pre} DROP CONSTRAINT {c.sql}") for c in old.checks if c not in new.checks]
    out += [Stmt(f"{pre} ADD CONSTRAINT {c.sql} {c.definition}")
            for c in new.checks if c not in old.checks]
    return out


def _composite(c: Composite) -> list[Stmt]:
    attrs = ", ".join(f"{a.sql} {a.type}" + (f" COLLATE {a.collation}" if a.collation else "")
                      for a in c.attributes)
    return [Stmt(f"CREATE TYPE {c.sql} AS ({attrs})")]


def _alter_composite(old: Composite, new: Composite) -> list[Stmt] | None:
    olds = {a.name: a for a in old.attributes}
    news = {a.name: a for a in new.attributes}
    actions = [f"DROP ATTRIBUTE {a.sql}" for a in old.attributes if a.name not in news]
    for a in new.attributes:
        coll = f" COLLATE {a.collation}" if a.collation else ""
        if a.name not in olds:
            actions.append(f"ADD ATTRIBUTE {a.sql} {a.type}{coll}")
        elif olds[a.name] != a:
            actions.append(f"ALTER ATTRIBUTE {a.sql} TYPE {a.type}{coll}")
    return [Stmt(f"ALTER TYPE {new.sql} {', '.join(actions)}")] if actions else []


def _sequence(s: Sequence, verb: str) -> list[Stmt]:
    opts = _seq_options(s.data_type, s.start, s.increment, s.min_value, s.max_value, s.cache,
                        s.cycle)
    unlogged = "UNLOGGED " if s.unlogged and verb == "CREATE" else ""
    return [Stmt(f"{verb} {unlogged}SEQUENCE {s.sql} {opts}")]


def _alter_function(old: Function, new: Function) -> list[Stmt] | None:
    if (old.routine, old.arguments, old.result) != (new.routine, new.arguments, new.result):
        return None
    return [Stmt(new.definition)]


def _policy(p: Policy) -> list[Stmt]:
    sql = (f"CREATE POLICY {p.sql} ON {p.table_sql} AS "
           f"{'PERMISSIVE' if p.permissive else 'RESTRICTIVE'} FOR {p.command} "
           f"TO {', '.join(p.roles)}")
    if p.using:
        sql += f" USING ({p.using})"
    if p.check:
        sql += f" WITH CHECK ({p.check})"
    return [Stmt(sql)]


_TRIGGER_STATES = {"O": "ENABLE", "D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}


def _trigger_state(t: Trigger) -> list[Stmt]:
    if t.enabled == "O":
        return []
    rel = "VIEW" if t.on_view else "TABLE"
    return [Stmt(f"ALTER {rel} {t.table_sql} {_TRIGGER_STATES[t.enabled]} TRIGGER {t.sql}")]


def _alter_trigger(old: Trigger, new: Trigger) -> list[Stmt] | None:
    if old.definition != new.definition or old.on_view != new.on_view:
        return None
    return [Stmt(f"ALTER TABLE {new.table_sql} {_TRIGGER_STATES[new.enabled]} TRIGGER {new.sql}")]


def privilege_changes(g: Grant, old: tuple[Privilege, ...], new: tuple[Privilege, ...]
                      ) -> list[Stmt]:
    """GRANT and REVOKE statements that turn privileges `old` into `new`."""
    def state(privs: tuple[Privilege, ...]) -> dict[tuple[str, str], bool]:
        return {(p.grantee, p.privilege): p.grantable for p in privs}

    before, after = state(old), state(new)
    cols = f" ({g.column})" if g.column else ""
    out = []
    for (grantee, priv), grantable in sorted(before.items()):
        if (grantee, priv) not in after:
            out.append(Stmt(f"REVOKE {priv}{cols} ON {g.on} FROM {grantee} CASCADE"))
        elif grantable and not after[(grantee, priv)]:
            out.append(Stmt(f"REVOKE GRANT OPTION FOR {priv}{cols} ON {g.on} FROM {grantee} "
                            "CASCADE"))
    for (grantee, priv), grantable in sorted(after.items()):
        if before.get((grantee, priv)) is None or (grantable and not before[(grantee, priv)]):
            option = " WITH GRANT OPTION" if grantable else ""
            out.append(Stmt(f"GRANT {priv}{cols} ON {g.on} TO {grantee}{option}"))
    return out


def _comment(c: Comment, text: str | None) -> list[Stmt]:
    return [Stmt(f"COMMENT ON {c.on} IS {literal(text) if text is not None else 'NULL'}")]


def _ext(e: Extension) -> list[Stmt]:
    return [Stmt(f"CREATE EXTENSION {e.sql} WITH SCHEMA {e.schema_sql} "
                 f"VERSION {literal(e.version)}")]


def _alter_ext(old: Extension, new: Extension) -> list[Stmt] | None:
    out = []
    if old.schema_sql != new.schema_sql:
        out.append(Stmt(f"ALTER EXTENSION {new.sql} SET SCHEMA {new.schema_sql}"))
    if old.version != new.version:
        out.append(Stmt(f"ALTER EXTENSION {new.sql} UPDATE TO {literal(new.version)}"))
    return out


def _view(v: View | MatView) -> list[Stmt]:
    body = v.definition.strip().rstrip(";")
    opts = f" WITH ({', '.join(v.options)})" if v.options else ""
    if isinstance(v, MatView):
        return [Stmt(f"CREATE MATERIALIZED VIEW {v.sql}{opts} AS\n{body}\nWITH DATA")]
    return [Stmt(f"CREATE VIEW {v.sql}{opts} AS\n{body}")]


def create(obj: AnyObj) -> list[Stmt]:
    """Statements that create `obj` (a table without its columns: see create_table)."""
    match obj:
        case Schema():
            return [Stmt(f"CREATE SCHEMA {obj.sql}")]
        case Extension():
            return _ext(obj)
        case Enum():
            values = ", ".join(literal(v) for v in obj.values)
            return [Stmt(f"CREATE TYPE {obj.sql} AS ENUM ({values})")]
        case Domain():
            return _domain(obj)
        case Composite():
            return _composite(obj)
        case Sequence():
            return _sequence(obj, "CREATE")
        case Function():
            return [Stmt(obj.definition)]
        case Table():
            return create_table(obj, [])
        case Column():
            if obj.inherited:
                return []  # comes with the parent's ADD COLUMN or the ATTACH
            return [Stmt(f"ALTER TABLE {obj.table_sql} ADD COLUMN {column_def(obj)}")]
        case Constraint():
            return [Stmt(f"ALTER TABLE {obj.table_sql} ADD CONSTRAINT {obj.sql} "
                         f"{obj.definition}")]
        case Index():
            # ON ONLY (a partitioned table's own index) would not reach the partitions.
            return [Stmt(obj.definition.replace(" ON ONLY ", " ON ", 1))]
        case View() | MatView():
            return _view(obj)
        case Trigger():
            return [Stmt(obj.definition), *_trigger_state(obj)]
        case Policy():
            return _policy(obj)
        case SequenceOwner():
            return [Stmt(f"ALTER SEQUENCE {obj.sql} OWNED BY {obj.owner_column}")]
        case Comment():
            return _comment(obj, obj.text)
        case Grant():
            return privilege_changes(obj, obj.default, obj.actual)
    raise TypeError(f"no DDL for {type(obj).__name__}")


def drop(obj: AnyObj) -> list[Stmt]:
    match obj:
        case Schema():
            return [Stmt(f"DROP SCHEMA {obj.sql}")]
        case Extension():
            return [Stmt(f"DROP EXTENSION {obj.sql}")]
        case Enum() | Composite():
            return [Stmt(f"DROP TYPE {obj.sql}")]
        case Domain():
            return [Stmt(f"DROP DOMAIN {obj.sql}")]
        case Sequence():
            return [Stmt(f"DROP SEQUENCE {obj.sql}")]
        case Function():
            return [Stmt(f"DROP {obj.routine} {obj.sql}")]
        case Table():
            return [Stmt(f"DROP TABLE {obj.sql}")]
        case Column():
            if obj.inherited:
                return []  # goes with the parent's DROP COLUMN
            return [Stmt(f"ALTER TABLE {obj.table_sql} DROP COLUMN {obj.column_sql}")]
        case Constraint():
            return [Stmt(f"ALTER TABLE {obj.table_sql} DROP CONSTRAINT {obj.sql}")]
        case Index():
            return [Stmt(f"DROP INDEX {obj.sql}")]
        case View():
            return [Stmt(f"DROP VIEW {obj.sql}")]
        case MatView():
            return [Stmt(f"DROP MATERIALIZED VIEW {obj.sql}")]
        case Trigger():
            return [Stmt(f"DROP TRIGGER {obj.sql} ON {obj.table_sql}")]
        case Policy():
            return [Stmt(f"DROP POLICY {obj.sql} ON {obj.table_sql}")]
        case SequenceOwner():
            return [Stmt(f"ALTER SEQUENCE {obj.sql} OWNED BY NONE")]
        case Comment():
            return _comment(obj, None)
        case Grant():
            return privilege_changes(obj, obj.actual, obj.default)
    raise TypeError(f"no DDL for {type(obj).__name__}")


_ALTERS: dict[type, Callable[[Any, Any], list[Stmt] | None]] = {
    Extension: _alter_ext,
    Enum: _enum_additions,
    Domain: _alter_domain,
    Composite: _alter_composite,
    Sequence: lambda old, new: None if old.unlogged != new.unlogged else _sequence(new, "ALTER"),
    Function: _alter_function,
    Table: alter_table,
    Column: alter_column,
    Trigger: _alter_trigger,
    Comment: lambda old, new: _comment(new, new.text),
    Grant: lambda old, new: privilege_changes(new, old.actual, new.actual),
}


def alter(old: AnyObj, new: AnyObj) -> list[Stmt] | None:
    """Statements that change `old` into `new` in place, or None: drop and recreate."""
    if type(old) is not type(new):
        return None
    how = _ALTERS.get(type(old))
    return how(old, new) if how is not None else None
