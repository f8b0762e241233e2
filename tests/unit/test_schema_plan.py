"""Ordering of schema DDL and the three-way merge, on hand-made catalogs (no Postgres)."""

from __future__ import annotations

import pytest

from cygnet.errors import InvalidArgument
from cygnet.schema.merge import Rename, three_way
from cygnet.schema.model import Catalog, Column, Enum, Index, Schema, Table, View
from cygnet.schema.plan import plan


def table(name: str, schema: str = "app") -> Table:
    return Table(schema=schema, name=name, sql=f"{schema}.{name}", partitioned=False,
                 partition_key="", partition_of="", partition_bound="", unlogged=False,
                 rls=False, force_rls=False, options=())


def column(t: str, name: str, typ: str = "integer", schema: str = "app") -> Column:
    return Column(schema=schema, name=name, sql=f"{schema}.{t}.{name}", table=t,
                  table_sql=f"{schema}.{t}", column_sql=name, type=typ, collation="",
                  not_null=False, default="", generated="", identity=None)


def view(name: str, body: str) -> View:
    return View(schema="app", name=name, sql=f"app.{name}", definition=body, options=())


def catalog(*objs: tuple[object, tuple[str, ...]]) -> Catalog:
    c = Catalog()
    for obj, deps in objs:
        c.add(obj, *deps)  # type: ignore[arg-type]
    return c


def shop(col_type: str = "integer", with_view: bool = True) -> Catalog:
    s = Schema(schema="", name="app", sql="app")
    mood = Enum(schema="app", name="mood", sql="app.mood", values=("a", "b"))
    t = table("t")
    objs: list[tuple[object, tuple[str, ...]]] = [
        (s, ()), (mood, (s.key,)), (t, (s.key,)),
        (column("t", "n", col_type), (t.key,)), (column("t", "m", "app.mood"), (t.key, mood.key)),
        (Index(schema="app", name="t_n", sql="app.t_n", table="t", table_sql="app.t",
               definition="CREATE INDEX t_n ON app.t USING btree (n)"),
         (t.key, "column:app.t.n"))]
    if with_view:
        objs.append((view("v", "SELECT n FROM app.t"), (s.key, "column:app.t.n")))
        objs.append((view("vv", "SELECT n FROM app.v"), (s.key, "view:app.v")))
    return catalog(*objs)


def sqls(old: Catalog, new: Catalog) -> list[str]:
    return [s.sql for s in plan(old, new).statements]


def first(stmts: list[str], text: str) -> int:
    """Index of the first statement that is `text` or contains it followed by a boundary."""
    return next(i for i, s in enumerate(stmts)
                if s.endswith(text) or any(text + end in s for end in (" ", "\n", ";", "(")))


def test_creates_come_before_their_users_and_drops_after() -> None:
    stmts = sqls(Catalog(), shop())
    order = [first(stmts, x) for x in ("CREATE SCHEMA app", "CREATE TYPE app.mood",
                                       "CREATE TABLE app.t", "CREATE INDEX t_n",
                                       "CREATE VIEW app.v", "CREATE VIEW app.vv")]
    assert order == sorted(order)
    # Columns go inline into CREATE TABLE, not as ALTERs.
    assert not any("ADD COLUMN" in s for s in stmts)
    drops = sqls(shop(), Catalog())
    order = [first(drops, x) for x in ("DROP VIEW app.vv", "DROP VIEW app.v",
                                       "DROP TABLE app.t", "DROP TYPE app.mood",
                                       "DROP SCHEMA app")]
    assert order == sorted(order)
    # The index and columns go with their table.
    assert not any("DROP INDEX" in s or "DROP COLUMN" in s for s in drops)


def test_a_retyped_column_recreates_views_around_it_but_not_the_index() -> None:
    stmts = sqls(shop("integer"), shop("bigint"))
    alter = first(stmts, "TYPE bigint")
    assert first(stmts, "DROP VIEW app.vv") < first(stmts, "DROP VIEW app.v") < alter
    assert alter < first(stmts, "CREATE VIEW app.v") < first(stmts, "CREATE VIEW app.vv")
    assert not any("INDEX" in s for s in stmts)


def test_enum_values_are_added_in_place_before_the_transaction() -> None:
    old = shop(with_view=False)
    new = shop(with_view=False)
    grown = Enum(schema="app", name="mood", sql="app.mood", values=("z", "a", "m", "b", "c"))
    new.objects[grown.key] = grown
    p = plan(old, new)
    assert [s.sql for s in p.statements] == [
        "ALTER TYPE app.mood ADD VALUE 'z' BEFORE 'a'",
        "ALTER TYPE app.mood ADD VALUE 'm' BEFORE 'b'",
        "ALTER TYPE app.mood ADD VALUE 'c' AFTER 'b'"]
    script = p.script()
    assert script.index("ADD VALUE 'c'") < script.index("BEGIN;")
    # Reordered labels cannot be altered in place: the type and its users are recreated.
    shuffled = Enum(schema="app", name="mood", sql="app.mood", values=("b", "a"))
    new.objects[grown.key] = shuffled
    stmts = sqls(old, new)
    assert first(stmts, "DROP COLUMN m") < first(stmts, "DROP TYPE app.mood") < first(
        stmts, "CREATE TYPE app.mood") < first(stmts, "ADD COLUMN m")


def test_a_dependency_cycle_is_broken_not_fatal() -> None:
    a, b = view("a", "x"), view("b", "y")
    old = Catalog()
    new = catalog((a, (b.key,)), (b, (a.key,)))
    p = plan(old, new)
    assert len(p.steps) == 2 and p.notes and "cycle" in p.notes[0]


def test_three_way_takes_source_changes_and_reports_conflicts() -> None:
    base = shop(with_view=False)
    source = shop("bigint", with_view=False)  # changed n
    target = shop(with_view=False)
    extra = table("extra")
    target.add(extra, "schema:app")  # the target's own change survives
    desired, conflicts = three_way(base, source, target)
    assert conflicts == []
    assert isinstance(desired.objects["column:app.t.n"], Column)
    assert desired.objects["column:app.t.n"].type == "bigint"
    assert extra.key in desired.objects
    # Both sides changed n the same way: nothing to do, no conflict.
    _, conflicts = three_way(base, source, shop("bigint", with_view=False))
    assert conflicts == []
    # Differently: a conflict with all three versions.
    _, conflicts = three_way(base, source, shop("text", with_view=False))
    (c,) = conflicts
    assert c.key == "column:app.t.n" and c.base and c.source and c.target


def test_a_source_drop_that_the_target_still_uses_is_a_conflict() -> None:
    base = shop(with_view=False)
    source = shop(with_view=False)
    del source.objects["column:app.t.n"]
    target = shop(with_view=False)
    target.add(view("uses_n", "SELECT n FROM app.t"), "column:app.t.n")
    _, conflicts = three_way(base, source, target)
    assert [c.key for c in conflicts] == ["column:app.t.n"]
    assert "view:app.uses_n" in conflicts[0].reason


@pytest.mark.parametrize("text", ["users", "public.users", "a.b.c.d=x", "a.b=", "a.b=x.y",
                                  "=x", "a..b=x"])
def test_bad_rename_hints_name_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        Rename.parse(text, "renames[0]")
    assert err.value.field == "renames[0]"


def test_rename_hints_parse() -> None:
    assert Rename.parse("public.users=people") == Rename("public", "users", "", "people")
    assert Rename.parse("s.t.c=d").sql()[1] == ("s", "t", "c", "d")


def test_every_schema_request_field_has_a_rule() -> None:
    from cygnet.api.v1 import schema_pb2
    from cygnet.rpc.requests import RULES

    service = schema_pb2.DESCRIPTOR.services_by_name["Schema"]
    for method in service.methods:
        path = f"/{service.full_name}/{method.name}"
        assert set(RULES[path].fields) == {f.name for f in method.input_type.fields}, path
