"""Masking rules: a TOML file, one table per SQL database, one key per column.

    [databases.postgres]
    "public.users.email" = "email"          # SCHEMA.TABLE.COLUMN, or TABLE.COLUMN (public)
    "users.name"         = "name"
    "users.ssn"          = "hash"
    "users.note"         = "null"
    "users.country"      = { mask = "constant", value = "XX" }
    "users.card"         = { mask = "partial", first = 0, last = 4 }

Columns no rule names are kept as they are. Parsing checks the file's shape;
`check` checks the rules against a live catalog (tables, columns, types).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from cygnet.errors import InvalidArgument
from cygnet.names import shown

MASKS = ("hash", "name", "email", "phone", "null", "constant", "partial", "keep")
TEXT_MASKS = ("hash", "name", "email", "phone", "partial")
MAX_RULES_BYTES = 256 * 1024
_IDENT = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_KEY = re.compile(rf"(?:({_IDENT})\.)?({_IDENT})\.({_IDENT})")


@dataclass(frozen=True)
class Rule:
    dbname: str
    schema: str
    table: str
    column: str
    mask: str
    value: str = ""  # constant
    first: int = 0  # partial: characters kept at the start
    last: int = 0  # and at the end

    @property
    def ident(self) -> str:
        return f"{self.schema}.{self.table}.{self.column}"

    @property
    def where(self) -> str:
        return f"{self.dbname}: {self.ident}"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _unquote(part: str) -> str:
    return part[1:-1].replace('""', '"') if part.startswith('"') else part


def _rule(path: str, dbname: str, key: str, spec: Any) -> Rule:
    m = _KEY.fullmatch(key)
    if m is None:
        raise InvalidArgument(path, f"{shown(key)} is not TABLE.COLUMN or SCHEMA.TABLE.COLUMN")
    schema, table, column = _unquote(m[1] or "public"), _unquote(m[2]), _unquote(m[3])
    if isinstance(spec, str):
        spec = {"mask": spec}
    if not isinstance(spec, dict):
        raise InvalidArgument(path, "a mask name or a table { mask = ..., ... }")
    unknown = set(spec) - {"mask", "value", "first", "last"}
    if unknown:
        raise InvalidArgument(path, f"unknown key(s) {', '.join(sorted(unknown))}")
    mask = spec.get("mask")
    if mask not in MASKS:
        raise InvalidArgument(path, f"mask {shown(str(mask))} is not one of {', '.join(MASKS)}")
    value = spec.get("value", "")
    if mask == "constant" and (not isinstance(value, str | int | float) or
                               isinstance(value, bool) or "value" not in spec):
        raise InvalidArgument(path, "constant needs value = \"...\" (a string or a number)")
    first, last = spec.get("first", 0), spec.get("last", 0)
    for name, n in (("first", first), ("last", last)):
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 64:
            raise InvalidArgument(path, f"{name} must be a whole number from 0 to 64")
    if mask == "partial" and first + last == 0:
        raise InvalidArgument(path, "partial keeps first = N and/or last = N characters")
    return Rule(dbname, schema, table, column, mask, str(value), first, last)


def parse(text: str, path: str = "rules") -> list[Rule]:
    """The rules in `text`; a malformed file or rule is an error naming where."""
    if len(text.encode()) > MAX_RULES_BYTES:
        raise InvalidArgument(path, "at most 256 KiB of rules")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(path, f"not valid TOML: {exc}") from exc
    extra = set(doc) - {"databases"}
    if extra:
        raise InvalidArgument(path, f"unknown section(s) {', '.join(sorted(extra))}: rules go "
                              "under [databases.NAME]")
    dbs = doc.get("databases", {})
    if not isinstance(dbs, dict):
        raise InvalidArgument(path, "[databases.NAME] tables of column rules")
    rules: list[Rule] = []
    for dbname, columns in dbs.items():
        if not isinstance(columns, dict):
            raise InvalidArgument(f"{path}: databases.{dbname}", "a table of column rules")
        for key, spec in columns.items():
            rules.append(_rule(f"{path}: databases.{dbname}.{key!r}", dbname, key, spec))
    seen: set[str] = set()
    for r in rules:
        if r.where in seen:
            raise InvalidArgument(path, f"{r.where} has two rules")
        seen.add(r.where)
    return rules


def by_table(rules: list[Rule], dbname: str) -> dict[tuple[str, str], list[Rule]]:
    """The rules of one SQL database that change something, grouped by table."""
    out: dict[tuple[str, str], list[Rule]] = {}
    for r in rules:
        if r.dbname == dbname and r.mask != "keep":
            out.setdefault((r.schema, r.table), []).append(r)
    return out
