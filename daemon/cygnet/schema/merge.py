"""Three-way schema merge: base, source and target catalogs -> the target's new schema.

For every object: unchanged on the source since the base -> the target's
stays; changed on the source and not on the target -> the source's version
is taken; changed on both, the same way -> nothing to do; changed on both,
differently -> a conflict. An object the source dropped while the target
made something new depend on it is a conflict too. Conflicts mean nothing
is applied. Only the schema is merged, never the data.
"""

from __future__ import annotations

from dataclasses import dataclass

from cygnet.errors import InvalidArgument
from cygnet.names import shown
from cygnet.schema.model import AnyObj, Catalog

NOTE = ("Only the schema is merged: rows in tables are not copied between branches, "
        "and migration history tables travel only as the schema they live in")


@dataclass(frozen=True)
class Conflict:
    key: str
    base: AnyObj | None
    source: AnyObj | None
    target: AnyObj | None
    reason: str = ""


def three_way(base: Catalog, source: Catalog, target: Catalog
              ) -> tuple[Catalog, list[Conflict]]:
    """The target's schema with the source's changes since `base` in it, and the conflicts."""
    desired = Catalog(objects=dict(target.objects),
                      deps={k: set(v) for k, v in target.deps.items()},
                      sizes=target.sizes, server_version=target.server_version)
    conflicts: list[Conflict] = []
    taken_drops: list[str] = []
    for key in sorted(base.objects.keys() | source.objects.keys()):
        b, s, t = base.objects.get(key), source.objects.get(key), target.objects.get(key)
        if s == b or t == s:
            continue
        if t != b:
            conflicts.append(Conflict(key, b, s, t, "changed on both sides"))
            continue
        if s is None:
            desired.objects.pop(key, None)
            desired.deps.pop(key, None)
            taken_drops.append(key)
        else:
            desired.objects[key] = s
            desired.deps[key] = set(source.deps.get(key, ()))
    dependents = target.dependents()
    for key in taken_drops:
        kept = sorted(d for d in dependents.get(key, ()) if d in desired.objects
                      and d not in source.objects and d not in base.objects)
        if kept:
            conflicts.append(Conflict(key, base.objects.get(key), None, target.objects.get(key),
                                      f"dropped on the source, but the target's {kept[0]} "
                                      "depends on it"))
    return desired, conflicts


@dataclass(frozen=True)
class Rename:
    """SCHEMA.TABLE=NEW or SCHEMA.TABLE.COLUMN=NEW, old names as the base has them."""

    schema: str
    table: str
    column: str
    new: str

    @classmethod
    def parse(cls, text: str, field: str = "renames") -> Rename:
        old, sep, new = text.partition("=")
        parts = old.split(".")
        if not sep or not new or "." in new or len(parts) not in (2, 3) or not all(parts):
            raise InvalidArgument(field, f"{shown(text)} is not SCHEMA.TABLE=NEWNAME or "
                                  "SCHEMA.TABLE.COLUMN=NEWNAME")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "", new)

    def sql(self) -> tuple[str, tuple[str, ...]]:
        """The statement as a psycopg SQL template and its identifiers."""
        if self.column:
            return ("ALTER TABLE {}.{} RENAME COLUMN {} TO {}",
                    (self.schema, self.table, self.column, self.new))
        return "ALTER TABLE {}.{} RENAME TO {}", (self.schema, self.table, self.new)
