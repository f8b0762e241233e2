"""The typed model of a database's schema: one frozen struct per kind of object.

Every object has a stable key (`kind:identity`, e.g. `table:public.users`,
`column:public.users.email`) that is the same in any database holding that
object, so two schemas are compared key by key. Names are kept both raw
(for people and JSON) and quoted (`sql`, as quote_ident made them, for DDL).
Dependencies (from pg_depend, mapped to keys) live beside the objects, not in
them: two objects are the same when their structs are equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import msgspec


class Kind(StrEnum):
    SCHEMA = "schema"
    EXTENSION = "extension"
    ENUM = "enum"
    DOMAIN = "domain"
    COMPOSITE = "composite"
    SEQUENCE = "sequence"
    FUNCTION = "function"
    TABLE = "table"
    COLUMN = "column"
    CONSTRAINT = "constraint"
    INDEX = "index"
    VIEW = "view"
    MATVIEW = "materialized_view"
    TRIGGER = "trigger"
    POLICY = "policy"
    SEQUENCE_OWNER = "sequence_owner"
    COMMENT = "comment"
    GRANT = "grant"


class Obj(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Common to every object: where it lives and how DDL names it."""

    schema: str  # raw schema name ("" for schemas and extensions)
    name: str  # raw name within its schema or table
    sql: str  # the quoted, qualified name DDL uses

    @property
    def tag(self) -> str:
        """The kind as a plain string (cheap: keys are made by the hundred thousand)."""
        return self.__struct_config__.tag  # type: ignore[return-value]

    @property
    def kind(self) -> Kind:
        return Kind(self.tag)

    @property
    def ident(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    @property
    def key(self) -> str:
        return f"{self.tag}:{self.ident}"

    @property
    def target(self) -> str:
        """How COMMENT ON and GRANT name it (`TABLE public.t`)."""
        return f"{self.kind.upper()} {self.sql}"


class Schema(Obj, frozen=True, tag="schema"):
    @property
    def ident(self) -> str:
        return self.name


class Extension(Obj, frozen=True, tag="extension"):
    version: str
    schema_sql: str

    @property
    def ident(self) -> str:
        return self.name


class Enum(Obj, frozen=True, tag="enum"):
    values: tuple[str, ...]

    @property
    def target(self) -> str:
        return f"TYPE {self.sql}"


class DomainCheck(msgspec.Struct, frozen=True):
    name: str
    sql: str  # quoted constraint name
    definition: str  # pg_get_constraintdef: CHECK (...) [NOT VALID]


class Domain(Obj, frozen=True, tag="domain"):
    base_type: str
    collation: str  # quoted, "" for the base type's
    default: str
    not_null: bool
    checks: tuple[DomainCheck, ...]


class Attribute(msgspec.Struct, frozen=True):
    name: str
    sql: str
    type: str
    collation: str


class Composite(Obj, frozen=True, tag="composite"):
    attributes: tuple[Attribute, ...]

    @property
    def target(self) -> str:
        return f"TYPE {self.sql}"


class Sequence(Obj, frozen=True, tag="sequence"):
    data_type: str
    start: int
    increment: int
    min_value: int
    max_value: int
    cache: int
    cycle: bool
    unlogged: bool = False


class Function(Obj, frozen=True, tag="function"):
    """Functions and procedures; `name` carries the identity arguments."""

    proname: str
    routine: str  # FUNCTION | PROCEDURE
    identity_args: str
    arguments: str  # with names and defaults: must match for CREATE OR REPLACE
    result: str
    definition: str  # pg_get_functiondef: CREATE OR REPLACE ...

    @property
    def target(self) -> str:
        return f"{self.routine} {self.sql}"


class Table(Obj, frozen=True, tag="table"):
    partitioned: bool
    partition_key: str  # pg_get_partkeydef, "" unless partitioned
    partition_of: str  # quoted parent, "" unless a partition
    partition_bound: str  # FOR VALUES ... / DEFAULT
    unlogged: bool
    rls: bool
    force_rls: bool
    options: tuple[str, ...]  # reloptions, sorted


class Identity(msgspec.Struct, frozen=True):
    always: bool
    sequence: str  # quoted, qualified name of the identity sequence
    data_type: str
    start: int
    increment: int
    min_value: int
    max_value: int
    cache: int
    cycle: bool


class Column(Obj, frozen=True, tag="column"):
    """`schema`.`table` is the owner; `name` is the column."""

    table: str  # raw table name
    table_sql: str
    column_sql: str  # quoted column name alone
    type: str
    collation: str  # quoted, "" for the type's default
    not_null: bool
    default: str
    generated: str  # expression of a stored generated column, else ""
    identity: Identity | None
    # A partition's column, from its parent: changed, added and dropped there.
    inherited: bool = False

    @property
    def ident(self) -> str:
        return f"{self.schema}.{self.table}.{self.name}"

    @property
    def target(self) -> str:
        return f"COLUMN {self.sql}"


class Constraint(Obj, frozen=True, tag="constraint"):
    table: str
    table_sql: str
    contype: str  # p u f c x
    definition: str  # pg_get_constraintdef

    @property
    def ident(self) -> str:
        return f"{self.schema}.{self.table}.{self.name}"

    @property
    def target(self) -> str:
        return f"CONSTRAINT {self.sql} ON {self.table_sql}"


class Index(Obj, frozen=True, tag="index"):
    table: str
    table_sql: str
    definition: str  # pg_get_indexdef: CREATE [UNIQUE] INDEX ...


class View(Obj, frozen=True, tag="view"):
    definition: str  # pg_get_viewdef
    options: tuple[str, ...]


class MatView(Obj, frozen=True, tag="materialized_view"):
    definition: str
    options: tuple[str, ...]


class Trigger(Obj, frozen=True, tag="trigger"):
    table: str
    table_sql: str
    definition: str  # pg_get_triggerdef
    enabled: str  # O D R A (pg_trigger.tgenabled)
    on_view: bool = False

    @property
    def ident(self) -> str:
        return f"{self.schema}.{self.table}.{self.name}"

    @property
    def target(self) -> str:
        return f"TRIGGER {self.sql} ON {self.table_sql}"


class Policy(Obj, frozen=True, tag="policy"):
    table: str
    table_sql: str
    command: str  # ALL SELECT INSERT UPDATE DELETE
    permissive: bool
    roles: tuple[str, ...]  # quoted role names, or PUBLIC
    using: str
    check: str

    @property
    def ident(self) -> str:
        return f"{self.schema}.{self.table}.{self.name}"

    @property
    def target(self) -> str:
        return f"POLICY {self.sql} ON {self.table_sql}"


class SequenceOwner(Obj, frozen=True, tag="sequence_owner"):
    """ALTER SEQUENCE ... OWNED BY: its own object, so that it comes after the table."""

    owner_column: str  # quoted table.column


class Comment(Obj, frozen=True, tag="comment"):
    """`name` is the key of the object commented on."""

    on: str  # COMMENT ON target
    text: str

    @property
    def ident(self) -> str:
        return self.name


class Privilege(msgspec.Struct, frozen=True, order=True):
    grantee: str  # quoted role, or PUBLIC
    privilege: str  # SELECT, USAGE, ...
    grantable: bool


class Grant(Obj, frozen=True, tag="grant"):
    """Privileges that differ from the defaults; `name` is the key of the object."""

    on: str  # GRANT ... ON target
    column: str  # quoted column for column privileges, else ""
    default: tuple[Privilege, ...]
    actual: tuple[Privilege, ...]

    @property
    def ident(self) -> str:
        return self.name


AnyObj = (Schema | Extension | Enum | Domain | Composite | Sequence | Function | Table | Column
          | Constraint | Index | View | MatView | Trigger | Policy | SequenceOwner | Comment
          | Grant)


@dataclass
class Catalog:
    """One database's schema: its objects by key, and what each depends on."""

    objects: dict[str, AnyObj] = field(default_factory=dict)
    deps: dict[str, set[str]] = field(default_factory=dict)
    # Table key -> (estimated rows, bytes): for hazards (rewrites of big tables).
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    server_version: int = 0

    def add(self, obj: AnyObj, *deps: str) -> str:
        key = obj.key
        self.objects[key] = obj
        self.deps.setdefault(key, set()).update(d for d in deps if d and d != key)
        return key

    def depend(self, key: str, on: str) -> None:
        if key != on and key in self.objects:
            self.deps.setdefault(key, set()).add(on)

    def dependents(self) -> dict[str, set[str]]:
        """key -> keys that depend on it (reverse edges)."""
        out: dict[str, set[str]] = {}
        for key, deps in self.deps.items():
            for dep in deps:
                out.setdefault(dep, set()).add(key)
        return out


_ENCODER = msgspec.json.Encoder()


def to_builtins(obj: AnyObj) -> dict[str, object]:
    out = msgspec.to_builtins(obj)
    assert isinstance(out, dict)
    return out


def encode(obj: AnyObj) -> bytes:
    return _ENCODER.encode(obj)
