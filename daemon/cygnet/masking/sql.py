"""The SQL that masks: one UPDATE per table, built from rules and the live catalog.

The `hash` mask is HMAC-SHA256 keyed with the database's secret, written with
Postgres' own sha256() (HMAC(K, m) = H(K^opad || H(K^ipad || m)), RFC 2104),
so no extension is needed and every row is masked inside the server. The
padded keys travel as parameters, never in the statement text. The fakes
(name, email, phone) are drawn from that HMAC, so one value always becomes
the same fake and joins on masked columns still match.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from cygnet.errors import InvalidArgument
from cygnet.masking.rules import TEXT_MASKS, Rule
from cygnet.schema.model import Catalog, Column, Table

_TEXT_TYPES = ("text", "character varying", "character", "citext", "name")

FIRST = ("Ada", "Alan", "Barbara", "Claude", "Dana", "Edsger", "Frances", "Grace", "Hedy",
         "Ivan", "Joan", "Ken", "Leslie", "Margaret", "Niklaus", "Ole", "Peter", "Radia",
         "Sophie", "Tim", "Ursula", "Vint", "Whitfield", "Xiao", "Yukihiro", "Zhores",
         "Anita", "Bjarne", "Carol", "Dennis", "Elena", "Fran")
LAST = ("Lovelace", "Turing", "Liskov", "Shannon", "Scott", "Dijkstra", "Allen", "Hopper",
        "Lamarr", "Sutherland", "Clarke", "Thompson", "Lamport", "Hamilton", "Wirth", "Dahl",
        "Naur", "Perlman", "Wilson", "Berners-Lee", "Franklin", "Cerf", "Diffie", "Wang",
        "Matsumoto", "Alferov", "Borg", "Stroustrup", "Shaw", "Ritchie", "Moss", "Kay")


@dataclass(frozen=True)
class Key:
    """The HMAC key, padded: the two values the SQL needs (RFC 2104, 64-byte blocks)."""

    ipad: bytes
    opad: bytes

    @classmethod
    def of(cls, secret: bytes) -> Key:
        if len(secret) > 64:
            raise ValueError("HMAC keys here are at most 64 bytes")
        block = secret.ljust(64, b"\0")
        return cls(bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block))


def check(rules: list[Rule], catalog: Catalog, dbname: str) -> dict[str, Column]:
    """Each rule's column; a missing table or column, or a mask that cannot fit, is an
    error naming it (before anything is built)."""
    tables = {o.ident for o in catalog.objects.values() if isinstance(o, Table)}
    columns = {o.ident: o for o in catalog.objects.values() if isinstance(o, Column)}
    out = {}
    for r in rules:
        if f"{r.schema}.{r.table}" not in tables:
            raise InvalidArgument("rules", f"{r.where}: table {r.schema}.{r.table} does not "
                                  f"exist in SQL database {dbname!r}")
        col = columns.get(r.ident)
        if col is None:
            raise InvalidArgument("rules", f"{r.where}: table {r.schema}.{r.table} has no "
                                  f"column {r.column!r}")
        if r.mask == "keep":
            continue
        if col.generated or (col.identity is not None and col.identity.always):
            raise InvalidArgument("rules", f"{r.where}: a generated or identity column cannot "
                                  "be masked (mask what it is computed from)")
        if r.mask == "null" and col.not_null:
            raise InvalidArgument("rules", f"{r.where}: the column is NOT NULL; use constant")
        if r.mask in TEXT_MASKS and (not col.type.startswith(_TEXT_TYPES) or "[]" in col.type):
            raise InvalidArgument("rules", f"{r.where}: {r.mask} needs a text column, this one "
                                  f"is {col.type}; use null or constant")
        out[r.ident] = col
    return out


def _hmac(col: sql.Composable) -> sql.Composed:
    return sql.SQL("sha256({o}::bytea || sha256({i}::bytea || convert_to({c}::text, 'UTF8')))"
                   ).format(o=sql.Placeholder("opad"), i=sql.Placeholder("ipad"), c=col)


def _pick(words: tuple[str, ...], byte: int, h: sql.Composable) -> sql.Composed:
    arr = sql.SQL(", ").join(sql.Literal(w) for w in words)
    return sql.SQL("(ARRAY[{a}])[1 + mod(get_byte({h}, {b}), {n})]").format(
        a=arr, h=h, b=sql.Literal(byte), n=sql.Literal(len(words)))


def expression(r: Rule, col: Column) -> sql.Composable:
    """The new value of `col` under rule `r`, cast back to the column's type."""
    c = sql.SQL(col.column_sql)  # quoted by the catalog reader
    h = _hmac(c)
    hexed = sql.SQL("encode({h}, 'hex')").format(h=h)
    if r.mask == "null":
        return sql.NULL
    if r.mask == "constant":
        return sql.SQL("{v}::{t}").format(v=sql.Literal(r.value), t=sql.SQL(col.type))
    if r.mask == "hash":
        body: sql.Composable = hexed
    elif r.mask == "name":
        body = sql.SQL("{f} || ' ' || {l}").format(f=_pick(FIRST, 0, h), l=_pick(LAST, 1, h))
    elif r.mask == "email":
        body = sql.SQL("'user-' || substr({x}, 1, 16) || '@example.com'").format(x=hexed)
    elif r.mask == "phone":
        body = sql.SQL("'+1-555-' || lpad(mod(get_byte({h}, 0)::bigint * 65536 + get_byte({h}, 1)"
                       " * 256 + get_byte({h}, 2), 10000000)::text, 7, '0')").format(h=h)
    else:  # partial: a value no longer than what is kept is starred whole
        body = sql.SQL(
            "CASE WHEN length({c}) <= {k} THEN repeat('*', length({c})) ELSE "
            "left({c}, {f}) || repeat('*', length({c}) - {k}) || right({c}, {l}) END").format(
            c=c, k=sql.Literal(r.first + r.last), f=sql.Literal(r.first),
            l=sql.Literal(r.last))
    return sql.SQL("({b})::{t}").format(b=body, t=sql.SQL(col.type))


def updates(rules: list[Rule], columns: dict[str, Column]
            ) -> list[tuple[str, sql.Composed]]:
    """(qualified table, UPDATE) per masked table, every masked column in one statement."""
    tables: dict[str, list[sql.Composable]] = {}
    for r in rules:
        col = columns.get(r.ident)
        if col is None:
            continue
        sets = tables.setdefault(col.table_sql, [])
        sets.append(sql.SQL("{c} = {e}").format(c=sql.SQL(col.column_sql), e=expression(r, col)))
    return [(t, sql.SQL("UPDATE {t} SET {s}").format(t=sql.SQL(t), s=sql.SQL(", ").join(sets)))
            for t, sets in tables.items()]
