"""Reads a live database's schema from the system catalogs into a Catalog.

One query per kind of object (queries.py), on one connection, so a schema
of 1,000 tables reads in well under a second. pg_depend rows are mapped to
object keys through `refs`, a map from catalog addresses (class oid, object
oid, sub-id) to keys; that also places comments and column privileges.
Synchronous on purpose: the agent runs it in a worker thread, tests and the
benchmark call it directly.
"""

from __future__ import annotations

from typing import Any

import psycopg

from cygnet.schema import queries as Q
from cygnet.schema.model import (
    Attribute,
    Catalog,
    Column,
    Comment,
    Composite,
    Constraint,
    Domain,
    DomainCheck,
    Enum,
    Extension,
    Function,
    Grant,
    Identity,
    Index,
    Kind,
    MatView,
    Obj,
    Policy,
    Privilege,
    Schema,
    Sequence,
    SequenceOwner,
    Table,
    Trigger,
    View,
)

# Catalog oids are fixed across majors.
PG_CLASS, PG_TYPE, PG_PROC, PG_NAMESPACE = 1259, 1247, 1255, 2615
PG_CONSTRAINT, PG_ATTRDEF, PG_REWRITE, PG_TRIGGER = 2606, 2604, 2618, 2620
PG_POLICY, PG_EXTENSION = 3256, 3079

Ref = tuple[int, int, int]
Conn = psycopg.Connection[Any]

_POLICY_COMMANDS = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}


def privileges(items: list[str]) -> tuple[Privilege, ...]:
    out = []
    for item in items:
        grantee, privilege, grantable = item.rsplit("|", 2)
        out.append(Privilege(grantee, privilege, grantable == "true"))
    return tuple(sorted(out))


class Reader:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.catalog = Catalog()
        self.refs: dict[Ref, str] = {}
        self.members: set[tuple[int, int]] = set()
        self.relations: dict[int, Obj] = {}
        self._parent_oids: dict[int, int] = {}

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        return self.conn.execute(query).fetchall()

    def read(self) -> Catalog:
        self.catalog.server_version = self.conn.info.server_version
        self.members = {(c, o) for c, o in self.rows(Q.EXTENSION_MEMBERS)}
        self._schemas()
        self._extensions()
        self._types()
        self._relations()
        self._columns()
        self._sequence_owners()
        self._constraints()
        self._indexes()
        self._functions()
        self._triggers()
        self._policies()
        self._aux_refs()
        self._depends()
        self._comments()
        return self.catalog

    def _mine(self, classid: int, oid: int) -> bool:
        return (classid, oid) not in self.members

    def _add(self, ref: Ref, obj: Obj, *deps: str) -> str:
        key = self.catalog.add(obj, *deps)  # type: ignore[arg-type]
        self.refs[ref] = key
        return key

    def _grant(self, target: Obj, actual: list[str] | None, default: list[str] | None,
               on: str = "", column: str = "") -> None:
        if actual is None or default is None:
            return  # the defaults
        got, dflt = privileges(actual), privileges(default)
        if got != dflt:
            grant = Grant(schema="", name=target.key, sql=target.sql, on=on or target.target,
                          column=column, default=dflt, actual=got)
            self.catalog.add(grant, target.key)

    def _schemas(self) -> None:
        for oid, name, sql, actual, default in self.rows(Q.SCHEMAS):
            if self._mine(PG_NAMESPACE, oid):
                obj = Schema(schema="", name=name, sql=sql)
                self._add((PG_NAMESPACE, oid, 0), obj)
                self._grant(obj, actual, default)

    def _schema_key(self, name: str) -> str:
        return f"{Kind.SCHEMA}:{name}"

    def _extensions(self) -> None:
        for oid, name, sql, version, schema_sql, ns in self.rows(Q.EXTENSIONS):
            obj = Extension(schema="", name=name, sql=sql, version=version, schema_sql=schema_sql)
            self._add((PG_EXTENSION, oid, 0), obj, self.refs.get((PG_NAMESPACE, ns, 0), ""))

    def _types(self) -> None:
        for oid, schema, name, sql, values, array, actual, default in self.rows(Q.ENUMS):
            if self._mine(PG_TYPE, oid):
                obj = Enum(schema=schema, name=name, sql=sql, values=tuple(values))
                self._type(oid, array, obj, actual, default)
        for row in self.rows(Q.DOMAINS):
            oid, schema, name, sql, base, coll, default_expr, not_null, checks = row[:9]
            con_oids, array, actual, default = row[9:]
            if self._mine(PG_TYPE, oid):
                dom = Domain(schema=schema, name=name, sql=sql, base_type=base, collation=coll,
                             default=default_expr, not_null=not_null,
                             checks=tuple(DomainCheck(*c.split("|", 2)) for c in checks))
                self._type(oid, array, dom, actual, default)
                for con in con_oids:
                    self.refs[(PG_CONSTRAINT, con, 0)] = dom.key
        for oid, schema, name, sql, relid, array, attrs, actual, default in self.rows(Q.COMPOSITES):
            if self._mine(PG_TYPE, oid):
                comp = Composite(schema=schema, name=name, sql=sql, attributes=tuple(
                    Attribute(*a.split("|", 3)) for a in attrs))
                self._type(oid, array, comp, actual, default)
                self.refs[(PG_CLASS, relid, 0)] = comp.key

    def _type(self, oid: int, array: int, obj: Obj, actual: list[str], default: list[str]) -> None:
        self._add((PG_TYPE, oid, 0), obj, self._schema_key(obj.schema))
        self.refs[(PG_TYPE, array, 0)] = obj.key
        self._grant(obj, actual, default)

    def _relations(self) -> None:
        seqs = {r[0]: r[1:] for r in self.rows(Q.SEQUENCES)}
        for row in self.rows(Q.RELATIONS):
            (oid, relkind, schema, name, sql, unlogged, rls, force, options, partkey, parent,
             parent_oid, bound, viewdef, rows, size, rowtype, actual, default) = row
            if not self._mine(PG_CLASS, oid):
                continue
            opts = tuple(sorted(options))
            obj: Obj
            if relkind in ("r", "p"):
                obj = Table(schema=schema, name=name, sql=sql, partitioned=relkind == "p",
                            partition_key=partkey or "", partition_of=parent,
                            partition_bound=bound or "", unlogged=unlogged, rls=rls,
                            force_rls=force, options=opts)
                self.catalog.sizes[obj.key] = (int(rows), int(size))
            elif relkind == "v":
                obj = View(schema=schema, name=name, sql=sql, definition=viewdef, options=opts)
            elif relkind == "m":
                obj = MatView(schema=schema, name=name, sql=sql, definition=viewdef, options=opts)
            else:
                typ, start, inc, lo, hi, cache, cycle = seqs[oid]
                obj = Sequence(schema=schema, name=name, sql=sql, data_type=typ, start=start,
                               increment=inc, min_value=lo, max_value=hi, cache=cache,
                               cycle=cycle, unlogged=unlogged)
            self.relations[oid] = obj
            self._add((PG_CLASS, oid, 0), obj, self._schema_key(schema))
            self.refs[(PG_TYPE, rowtype, 0)] = obj.key
            if parent_oid:
                self._parent_oids[oid] = parent_oid
            self._grant(obj, actual, default)

    def _columns(self) -> None:
        identities = {(r[0], r[1]): r[2:] for r in self.rows(Q.IDENTITIES)}
        for row in self.rows(Q.COLUMNS):
            (relid, num, name, qname, typ, coll, not_null, default, defoid, identity, generated,
             acl, inherited) = row
            rel = self.relations.get(relid)
            if rel is None:
                continue
            rel_key = self.refs[(PG_CLASS, relid, 0)]
            if not isinstance(rel, Table):
                self.refs[(PG_CLASS, relid, num)] = rel_key  # a view's column: an address
                continue
            ident, seqoid = None, 0
            if identity and (relid, num) in identities:
                seqoid, seqname, seqtype, start, inc, lo, hi, cache, cycle = identities[
                    (relid, num)]
                ident = Identity(always=identity == "a", sequence=seqname, data_type=seqtype,
                                 start=start, increment=inc, min_value=lo, max_value=hi,
                                 cache=cache, cycle=cycle)
            col = Column(schema=rel.schema, name=name, sql=f"{rel.sql}.{qname}", table=rel.name,
                         table_sql=rel.sql, column_sql=qname, type=typ, collation=coll,
                         not_null=not_null, default="" if generated else default,
                         generated=default if generated else "", identity=ident,
                         inherited=inherited)
            key = self._add((PG_CLASS, relid, num), col, rel_key)
            if defoid:
                self.refs[(PG_ATTRDEF, defoid, 0)] = key
            if seqoid:
                self.refs[(PG_CLASS, seqoid, 0)] = key
            if acl:
                self._grant(col, acl, [], on=f"TABLE {rel.sql}", column=qname)

    def _sequence_owners(self) -> None:
        for seq, relid, num in self.rows(Q.SEQUENCE_OWNERS):
            seq_obj = self.relations.get(seq)
            col_key = self.refs.get((PG_CLASS, relid, num))
            col = self.catalog.objects.get(col_key or "")
            if seq_obj is None or not isinstance(col, Column):
                continue
            owner = SequenceOwner(schema=seq_obj.schema, name=seq_obj.name, sql=seq_obj.sql,
                                  owner_column=col.sql)
            self.catalog.add(owner, seq_obj.key, col.key)

    def _constraints(self) -> None:
        for oid, relid, name, qname, contype, definition, indexid in self.rows(Q.CONSTRAINTS):
            rel = self.relations.get(relid)
            if rel is None or not self._mine(PG_CONSTRAINT, oid):
                continue
            con = Constraint(schema=rel.schema, name=name, sql=qname, table=rel.name,
                             table_sql=rel.sql, contype=contype, definition=definition)
            self._add((PG_CONSTRAINT, oid, 0), con, rel.key)
            if contype in ("p", "u", "x") and indexid:
                self.refs[(PG_CLASS, indexid, 0)] = con.key

    def _indexes(self) -> None:
        for oid, relid, schema, name, sql, definition, backs, attached in self.rows(Q.INDEXES):
            rel = self.relations.get(relid)
            if rel is None or backs or not self._mine(PG_CLASS, oid):
                continue
            if attached:
                self.refs[(PG_CLASS, oid, 0)] = rel.key
                continue
            idx = Index(schema=schema, name=name, sql=sql, table=rel.name, table_sql=rel.sql,
                        definition=definition)
            self._add((PG_CLASS, oid, 0), idx, rel.key)

    def _functions(self) -> None:
        for row in self.rows(Q.FUNCTIONS):
            (oid, schema, proname, sql, prokind, ident_args, args, result, definition,
             actual, default) = row
            if not self._mine(PG_PROC, oid):
                continue
            fn = Function(schema=schema, name=f"{proname}({ident_args})",
                          sql=f"{sql}({ident_args})", proname=proname,
                          routine="PROCEDURE" if prokind == "p" else "FUNCTION",
                          identity_args=ident_args, arguments=args, result=result,
                          definition=definition.strip())
            self._add((PG_PROC, oid, 0), fn, self._schema_key(schema))
            self._grant(fn, actual, default)

    def _triggers(self) -> None:
        for oid, relid, name, qname, definition, enabled in self.rows(Q.TRIGGERS):
            rel = self.relations.get(relid)
            if rel is None:
                continue
            trg = Trigger(schema=rel.schema, name=name, sql=qname, table=rel.name,
                          table_sql=rel.sql, definition=definition, enabled=enabled,
                          on_view=isinstance(rel, View))
            self._add((PG_TRIGGER, oid, 0), trg, rel.key)

    def _policies(self) -> None:
        for oid, relid, name, qname, cmd, permissive, roles, using, check in self.rows(Q.POLICIES):
            rel = self.relations.get(relid)
            if rel is None:
                continue
            pol = Policy(schema=rel.schema, name=name, sql=qname, table=rel.name,
                         table_sql=rel.sql, command=_POLICY_COMMANDS.get(cmd, "ALL"),
                         permissive=permissive, roles=tuple(roles), using=using, check=check)
            self._add((PG_POLICY, oid, 0), pol, rel.key)

    def _aux_refs(self) -> None:
        for oid, view in self.rows(Q.RULES):
            if (PG_CLASS, view, 0) in self.refs:
                self.refs[(PG_REWRITE, oid, 0)] = self.refs[(PG_CLASS, view, 0)]
        for oid, elem in self.rows(Q.ARRAY_TYPES):
            if (PG_TYPE, elem, 0) in self.refs and (PG_TYPE, oid, 0) not in self.refs:
                self.refs[(PG_TYPE, oid, 0)] = self.refs[(PG_TYPE, elem, 0)]
        for child, parent in self._parent_oids.items():
            child_key = self.refs.get((PG_CLASS, child, 0))
            parent_key = self.refs.get((PG_CLASS, parent, 0))
            if child_key and parent_key:
                self.catalog.depend(child_key, parent_key)

    def _resolve(self, classid: int, objid: int, subid: int) -> str | None:
        return self.refs.get((classid, objid, subid)) or (
            self.refs.get((classid, objid, 0)) if subid else None)

    def _depends(self) -> None:
        owned_seqs = {self.catalog.objects[k].sql for k in self.catalog.objects
                      if k.startswith(f"{Kind.SEQUENCE_OWNER}:")}
        for classid, objid, subid, refclass, refid, refsub, deptype in self.rows(Q.DEPENDS):
            src = self._resolve(classid, objid, subid)
            dst = self._resolve(refclass, refid, refsub)
            if not src or not dst or src == dst:
                continue
            obj = self.catalog.objects.get(src)
            if deptype == "a" and isinstance(obj, Sequence) and obj.sql in owned_seqs:
                continue  # OWNED BY: the sequence_owner object carries it
            self.catalog.depend(src, dst)

    def _comments(self) -> None:
        for classid, objid, subid, text in self.rows(Q.COMMENTS):
            key = self.refs.get((classid, objid, subid))
            target = self.catalog.objects.get(key or "")
            if target is None or (subid and not isinstance(target, Column)):
                continue
            if classid == PG_CONSTRAINT and isinstance(target, Domain):
                continue  # a domain constraint's comment: not modelled
            if classid == PG_CLASS and isinstance(target, Constraint):
                continue  # on the index behind a constraint: not modelled
            comment = Comment(schema="", name=target.key, sql=target.sql, on=target.target,
                              text=text)
            self.catalog.add(comment, target.key)


def read_catalog(conn: Conn) -> Catalog:
    """The schema of the database `conn` is connected to (in its transaction, if one is open).

    search_path is emptied while reading, as pg_dump does, so that every name in
    view, default and index definitions comes out schema-qualified."""
    row = conn.execute("SELECT current_setting('search_path')").fetchone()
    conn.execute("SELECT set_config('search_path', '', false)")
    try:
        return Reader(conn).read()
    finally:
        if not conn.broken and conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("SELECT set_config('search_path', %s, false)", (row[0] if row else "",))
