"""Diff two catalogs and order the DDL that turns the first into the second.

Each changed object becomes steps (drop, alter, create). Steps are ordered
topologically: an object is created or changed after everything it depends
on in the new schema, and dropped (or changed) before whatever it depended on
in the old one. An object that cannot be changed in place is dropped and
recreated, and so is everything that depends on it. Sub-objects of a table
that is created or dropped go with it (columns inline in CREATE TABLE).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from cygnet.schema import ddl
from cygnet.schema.ddl import AFTER_TX, IN_TX, Stmt
from cygnet.schema.model import (
    AnyObj,
    Catalog,
    Column,
    Comment,
    Constraint,
    Function,
    Grant,
    Index,
    Kind,
    MatView,
    Policy,
    Table,
    Trigger,
    View,
)

DROP, ALTER, CREATE = "drop", "alter", "create"
_PHASE_RANK = {DROP: 0, ALTER: 1, CREATE: 2}
_KIND_RANK = {k: i for i, k in enumerate([
    Kind.SCHEMA, Kind.EXTENSION, Kind.ENUM, Kind.DOMAIN, Kind.COMPOSITE, Kind.FUNCTION,
    Kind.SEQUENCE, Kind.TABLE, Kind.COLUMN, Kind.SEQUENCE_OWNER, Kind.CONSTRAINT, Kind.INDEX,
    Kind.VIEW, Kind.MATVIEW, Kind.TRIGGER, Kind.POLICY, Kind.COMMENT, Kind.GRANT])}
# What Postgres refuses to keep through ALTER COLUMN ... TYPE: recreated around it.
_RETYPE_BLOCKERS = (View, MatView, Policy, Trigger, Function)
_SUB_OBJECTS = (Column, Constraint, Index, Trigger, Policy)


@dataclass(frozen=True)
class Change:
    action: str  # create | drop | alter | replace
    key: str
    old: AnyObj | None
    new: AnyObj | None
    because: str = ""  # for a replace forced by another change: that object's key


@dataclass
class Step:
    phase: str
    key: str
    stmts: list[Stmt]


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def statements(self) -> list[Stmt]:
        return [s for step in self.steps for s in step.stmts]

    def script(self) -> str:
        """The DDL as one script: the transactional part inside BEGIN/COMMIT."""
        stmts = self.statements
        if not stmts:
            return "-- no schema differences\n"
        before = [s for s in stmts if s.when == ddl.BEFORE_TX]
        inside = [s for s in stmts if s.when == IN_TX]
        after = [s for s in stmts if s.when == AFTER_TX]
        lines = [f"{s.sql};" for s in before]
        lines += ["BEGIN;", "SET LOCAL check_function_bodies = false;"]
        lines += [f"{s.sql};" for s in inside] + ["COMMIT;"]
        lines += [f"{s.sql};" for s in after]
        return "\n".join(lines) + "\n"


def _table_of(obj: AnyObj) -> str:
    if isinstance(obj, _SUB_OBJECTS):
        return f"{Kind.TABLE}:{obj.schema}.{obj.table}"
    return ""


def changes(old: Catalog, new: Catalog) -> dict[str, Change]:
    """Every object that differs, with replacements cascaded to dependents."""
    out: dict[str, Change] = {}
    retyped: list[str] = []
    for key in old.objects.keys() | new.objects.keys():
        o, n = old.objects.get(key), new.objects.get(key)
        if o == n:
            continue
        if o is None or n is None:
            out[key] = Change(CREATE if o is None else DROP, key, o, n)
            continue
        if ddl.alter(o, n) is None:
            out[key] = Change("replace", key, o, n)
        else:
            out[key] = Change(ALTER, key, o, n)
            if isinstance(o, Column) and isinstance(n, Column) and o.type != n.type:
                retyped.append(key)
    _cascade(old, new, out, retyped)
    return out


def _cascade(old: Catalog, new: Catalog, out: dict[str, Change], retyped: list[str]) -> None:
    dependents = old.dependents()
    todo = [(k, k) for k, c in out.items() if c.action == "replace"]
    for key in retyped:
        todo += [(d, key) for d in dependents.get(key, ())
                 if isinstance(old.objects.get(d), _RETYPE_BLOCKERS)]
    while todo:
        key, cause = todo.pop()
        change = out.get(key)
        if key != cause:
            if key not in new.objects or key not in old.objects:
                continue
            if change is not None and change.action == "replace":
                continue
            out[key] = Change("replace", key, old.objects[key], new.objects[key], because=cause)
        todo += [(d, cause) for d in dependents.get(key, ())
                 if (c := out.get(d)) is None or c.action != "replace"]


@dataclass
class _Graph:
    nodes: dict[tuple[str, str], Step] = field(default_factory=dict)
    edges: dict[tuple[str, str], set[tuple[str, str]]] = field(default_factory=dict)
    alias: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def node(self, phase: str, key: str) -> tuple[str, str] | None:
        n = (phase, key)
        n = self.alias.get(n, n)
        return n if n in self.nodes else None

    def edge(self, a: tuple[str, str] | None, b: tuple[str, str] | None) -> None:
        if a is not None and b is not None and a != b:
            self.edges.setdefault(a, set()).add(b)


def plan(old: Catalog, new: Catalog, *, concurrently: bool = False) -> Plan:
    """The changes from `old` to `new` and their DDL in dependency order.

    With `concurrently`, indexes on tables that already exist are created
    with CREATE INDEX CONCURRENTLY, outside the transaction."""
    found = changes(old, new)
    graph = _steps(old, new, found, concurrently)
    _edges(graph, old, new, found)
    ordered, notes = _toposort(graph, old, new)
    listed = sorted(found.values(), key=lambda c: (_KIND_RANK[_kind(c)], c.key))
    return Plan(listed, ordered, notes)


def _kind(change: Change) -> Kind:
    obj = change.new or change.old
    assert obj is not None
    return obj.kind


def _steps(old: Catalog, new: Catalog, found: dict[str, Change], concurrently: bool) -> _Graph:
    g = _Graph()
    dropped = {k for k, c in found.items() if c.action in (DROP, "replace")}
    created = {k for k, c in found.items() if c.action in (CREATE, "replace")}
    columns: dict[tuple[str, str], list[Column]] | None = None  # read in attnum order
    for key, c in found.items():
        if c.action in (DROP, "replace"):
            assert c.old is not None
            owner = _owner(c.old)
            if owner in dropped:
                g.alias[(DROP, key)] = (DROP, owner)  # goes with its table or target
            else:
                g.nodes[(DROP, key)] = Step(DROP, key, ddl.drop(c.old))
        if c.action in (CREATE, "replace"):
            assert c.new is not None
            table = _table_of(c.new)
            if isinstance(c.new, Column) and table in created:
                g.alias[(CREATE, key)] = (CREATE, table)
                continue
            if isinstance(c.new, Table):
                if columns is None:
                    columns = _columns_by_table(new)
                stmts = ddl.create_table(c.new, columns.get((c.new.schema, c.new.name), []))
            else:
                stmts = ddl.create(c.new)
            if concurrently and isinstance(c.new, Index) and table not in created:
                stmts = [Stmt(c.new.definition.replace(" INDEX ", " INDEX CONCURRENTLY ", 1),
                              AFTER_TX)]
            g.nodes[(CREATE, key)] = Step(CREATE, key, stmts)
        if c.action == ALTER:
            assert c.old is not None and c.new is not None
            stmts = ddl.alter(c.old, c.new) or []
            if stmts:
                g.nodes[(ALTER, key)] = Step(ALTER, key, stmts)
    return g


def _owner(obj: AnyObj) -> str:
    """What dropping takes `obj` with it: its table, or what a comment or grant is on."""
    if isinstance(obj, (Comment, Grant)):
        return obj.name
    if isinstance(obj, Table) and obj.partition_of:
        return ""
    return _table_of(obj)


def _columns_by_table(new: Catalog) -> dict[tuple[str, str], list[Column]]:
    out: dict[tuple[str, str], list[Column]] = {}
    for obj in new.objects.values():
        if isinstance(obj, Column):
            out.setdefault((obj.schema, obj.table), []).append(obj)
    return out


def _edges(g: _Graph, old: Catalog, new: Catalog, found: dict[str, Change]) -> None:
    # Only objects that have a step (or go with one) can be the dependent side.
    stepped = {key for _, key in (*g.nodes, *g.alias)}
    for key in stepped:
        for dep in new.deps.get(key, ()):
            for pa in (ALTER, CREATE):
                for pb in (ALTER, CREATE):
                    g.edge(g.node(pb, dep), g.node(pa, key))
        for dep in old.deps.get(key, ()):
            for pa, pb in ((DROP, DROP), (ALTER, DROP), (DROP, ALTER)):
                g.edge(g.node(pa, key), g.node(pb, dep))
    by_name: dict[str, list[tuple[str, str]]] = {}
    for (phase, key) in g.nodes:
        if phase == DROP:
            obj = old.objects[key]
            by_name.setdefault(obj.sql, []).append((phase, key))
    for (phase, key) in list(g.nodes):
        if phase == CREATE:
            for d in by_name.get(new.objects[key].sql, []):
                g.edge(d, (phase, key))
    for key, c in found.items():
        if c.action == "replace":
            g.edge(g.node(DROP, key), g.node(CREATE, key))


def _rank(node: tuple[str, str], old: Catalog, new: Catalog) -> tuple[int, int, str]:
    phase, key = node
    obj = (new if phase == CREATE else old).objects.get(key) or new.objects[key]
    kind = _KIND_RANK[obj.tag]  # type: ignore[index]
    return (_PHASE_RANK[phase], -kind if phase == DROP else kind, key)


def _toposort(g: _Graph, old: Catalog, new: Catalog) -> tuple[list[Step], list[str]]:
    indeg = {n: 0 for n in g.nodes}
    for bs in g.edges.values():
        for b in bs:
            indeg[b] += 1
    heap = [(_rank(n, old, new), n) for n, d in indeg.items() if d == 0]
    heapq.heapify(heap)
    out: list[Step] = []
    notes: list[str] = []
    done: set[tuple[str, str]] = set()
    while len(done) < len(g.nodes):
        if not heap:  # a cycle: take the first remaining step by rank
            n = min((n for n in g.nodes if n not in done), key=lambda n: _rank(n, old, new))
            notes.append(f"dependency cycle broken at {n[0]} {n[1]}")
            heap.append((_rank(n, old, new), n))
        _, n = heapq.heappop(heap)
        if n in done:
            continue
        done.add(n)
        out.append(g.nodes[n])
        for b in g.edges.get(n, ()):
            indeg[b] -= 1
            if indeg[b] == 0 and b not in done:
                heapq.heappush(heap, (_rank(b, old, new), b))
    return out, notes
