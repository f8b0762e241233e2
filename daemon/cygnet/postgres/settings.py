"""A branch's own Postgres settings: validated against its pg_settings, kept in
PGDATA/cygnet.user.conf.

The file lives in the branch's data directory, so snapshots, clones (child
branches), resets and backups carry it with the data. postgresql.conf
includes it after cygnet.conf: a user's work_mem beats the size class's, and
the settings Cygnet owns (owned.py) are never written to it. A last file,
cygnet.final.conf, is included after it: it repeats shared_preload_libraries
as the branch's own list plus the libraries Cygnet needs, so a branch that
sets its own list never drops the fence of a replicated primary.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from cygnet.errors import InvalidArgument
from cygnet.names import shown
from cygnet.postgres import _fs
from cygnet.postgres.owned import FENCE, PRELOADED, is_owned, strip_owned

USER_FILE = "cygnet.user.conf"
USER_INCLUDE_LINE = f"include_if_exists = '{USER_FILE}'"
FINAL_FILE = "cygnet.final.conf"
FINAL_INCLUDE_LINE = f"include_if_exists = '{FINAL_FILE}'"
MAX_VALUE_LEN = 4096
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,62}")
_NUMBER = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*")
_LINE = re.compile(r"^([a-z_][a-z0-9_.]*) = '((?:[^'\\]|''|\\.)*)'$")
_MEMORY = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_TIME = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_BOOLS = {"on": "on", "off": "off", "true": "on", "false": "off", "yes": "on", "no": "off",
          "1": "on", "0": "off"}
# pg_settings.context values whose settings can be set in a config file at all.
_SETTABLE = frozenset({"postmaster", "sighup", "superuser-backend", "backend",
                       "superuser", "user"})

SETTINGS_QUERY = ("SELECT name, setting, unit, vartype, context, min_val, max_val, enumvals"
                  " FROM pg_settings")


@dataclass(frozen=True)
class Definition:
    """One row of pg_settings: what a setting accepts."""

    name: str
    setting: str
    unit: str | None
    vartype: str
    context: str
    min_val: str | None
    max_val: str | None
    enumvals: list[str] | None

    @property
    def needs_restart(self) -> bool:
        return self.context == "postmaster"


def field(name: str) -> str:
    return f"settings.{name}"


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        # Not in the field path: it travels in metadata, which must stay plain.
        raise InvalidArgument("settings", f"{shown(name)} is not a setting name: letters, "
                              "digits, '_' and '.', at most 63 characters")


def check_value_text(name: str, value: str) -> None:
    if len(value) > MAX_VALUE_LEN or any(ord(c) < 32 for c in value):
        raise InvalidArgument(field(name), f"the value must be at most {MAX_VALUE_LEN} "
                              "characters, without control characters")


def _unit_scale(unit: str, base: str | None) -> float | None:
    """How many base units one `unit` is; None when they do not mix."""
    if not base:
        return None
    base_num, base_unit = re.fullmatch(r"(\d*)(\D+)", base).groups()  # type: ignore[union-attr]
    factor = int(base_num or 1)
    for table in (_MEMORY, _TIME):
        if unit in table and base_unit in table:
            return table[unit] / (table[base_unit] * factor)
    return None


def _number(d: Definition, value: str) -> str:
    match = _NUMBER.fullmatch(value)
    kind = "an integer" if d.vartype == "integer" else "a number"
    if not match:
        units = f", optionally with a unit ({d.unit} by default)" if d.unit else ""
        raise InvalidArgument(field(d.name), f"{shown(value)} is not {kind}{units}")
    number, unit = float(match.group(1)), match.group(2)
    if unit:
        scale = _unit_scale(unit, d.unit)
        if scale is None:
            raise InvalidArgument(field(d.name), f"unit {shown(unit)} does not fit this "
                                  f"setting (its unit is {d.unit or 'none'})")
        number *= scale
    if d.vartype == "integer":
        number = float(round(number))
    low, high = float(d.min_val or "-inf"), float(d.max_val or "inf")
    if math.isnan(number) or not low <= number <= high:
        unit_text = f" {d.unit}" if d.unit else ""
        raise InvalidArgument(field(d.name), f"{shown(value)} is out of range: between "
                              f"{d.min_val} and {d.max_val}{unit_text}")
    return str(int(number)) if d.vartype == "integer" else repr(number)


def _libraries(value: str) -> list[str]:
    return [lib.strip().strip('"') for lib in value.split(",") if lib.strip()]


def normalize(d: Definition, value: str, libdir: Path | None = None) -> str:
    """The value as pg_settings.setting would show it; InvalidArgument naming the key
    for a wrong type, an out-of-range number or a bad enum value."""
    check_value_text(d.name, value)
    if d.vartype == "bool":
        found = _BOOLS.get(value.strip().lower())
        if found is None:
            raise InvalidArgument(field(d.name), f"{shown(value)} is not a boolean (on/off)")
        return found
    if d.vartype in ("integer", "real"):
        return _number(d, value)
    if d.vartype == "enum":
        choices = d.enumvals or []
        if value.strip().lower() not in choices:
            raise InvalidArgument(field(d.name), f"{shown(value)} is not one of: "
                                  f"{', '.join(choices)}")
        return value.strip().lower()
    if d.name == "shared_preload_libraries":
        _check_libraries(value, libdir)
    return value


def _check_libraries(value: str, libdir: Path | None) -> None:
    libs = _libraries(value)
    missing = [p for p in PRELOADED if p not in libs]
    if missing:
        raise InvalidArgument(field("shared_preload_libraries"),
                              f"must keep {', '.join(missing)} (Cygnet preloads it)")
    for lib in libs:
        if lib in FENCE:
            raise InvalidArgument(field("shared_preload_libraries"),
                                  f"{lib} is loaded by Cygnet on replicated primaries only")
        # A library that does not exist would keep the branch from starting.
        if not re.fullmatch(r"[A-Za-z0-9_-]+", lib):
            raise InvalidArgument(field("shared_preload_libraries"),
                                  f"{shown(lib)} is not a library name")
        if libdir is not None and not (libdir / f"{lib}.so").exists():
            raise InvalidArgument(field("shared_preload_libraries"),
                                  f"library {shown(lib)} is not installed")


def validate(definitions: dict[str, Definition], wanted: dict[str, str],
             libdir: Path | None = None) -> dict[str, str]:
    """Checks every wanted setting; returns them by lower-cased name, values as given."""
    checked: dict[str, str] = {}
    for raw_name, value in sorted(wanted.items()):
        check_name(raw_name)
        name = raw_name.lower()
        if is_owned(name):
            raise InvalidArgument(field(raw_name), "is set by Cygnet and cannot be changed "
                                  "(see docs/operations.md, Postgres settings)")
        d = definitions.get(name)
        if d is None:
            raise InvalidArgument(field(raw_name), "unknown setting: not in pg_settings")
        if d.context not in _SETTABLE:
            raise InvalidArgument(field(raw_name), f"cannot be set ({d.context})")
        normalize(d, value, libdir)
        checked[name] = value.strip()
    return checked


def pending(d: Definition, value: str) -> bool:
    """A restart-only setting whose stored value differs from the running one."""
    if not d.needs_restart:
        return False
    try:
        wanted = normalize(d, value)
    except InvalidArgument:
        return True
    if d.vartype == "real":
        return float(wanted) != float(d.setting)
    if d.name == "shared_preload_libraries":
        # The fence is Cygnet's addition (preload_line), not the branch's own.
        return _libraries(wanted) != [lib for lib in _libraries(d.setting) if lib not in FENCE]
    return wanted != d.setting


# --- the file --------------------------------------------------------------------

def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)|''", lambda m: m.group(1) or "'", text)


def render(settings: dict[str, str]) -> str:
    lines = ["# Written by cygnetd (cygnet branch config); edits are overwritten."]
    lines += [f"{name} = {_quote(value)}" for name, value in sorted(settings.items())]
    return "\n".join(lines) + "\n"


def read(pgdata: Path) -> dict[str, str]:
    """The stored settings (none when the file is missing); owned ones are ignored."""
    try:
        text = (pgdata / USER_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and not is_owned(match.group(1)):
            found[match.group(1)] = _unquote(match.group(2))
    return found


def write(pgdata: Path, settings: dict[str, str]) -> None:
    _fs.atomic_write(pgdata / USER_FILE, render(settings))


def preload_line(stored: dict[str, str], preloaded: tuple[str, ...]) -> str:
    """cygnet.final.conf's line: the branch's own libraries (if it sets them), then
    those of `preloaded` (Cygnet's) it leaves out."""
    libs = _libraries(stored.get("shared_preload_libraries", ""))
    libs += [lib for lib in preloaded if lib not in libs]
    return f"shared_preload_libraries = {_quote(','.join(libs))}\n"


def prepare(pgdata: Path, preloaded: tuple[str, ...] = PRELOADED) -> None:
    """Before a start or reload: Cygnet's owned settings win.

    Removes owned settings from postgresql.auto.conf (ALTER SYSTEM would
    otherwise beat cygnet.conf), keeps only well-formed, non-owned lines in
    cygnet.user.conf, and includes that file after cygnet.conf (call after
    cygnet.conf's include is in place). Then writes cygnet.final.conf, which
    keeps the `preloaded` libraries in the branch's own list, and includes it last.
    """
    auto = pgdata / "postgresql.auto.conf"
    if auto.exists():
        text = auto.read_text(encoding="utf-8")
        stripped = strip_owned(text)
        if stripped != text:
            _fs.atomic_write(auto, stripped)
    user = pgdata / USER_FILE
    if user.exists():
        wanted = render(read(pgdata))
        if user.read_text(encoding="utf-8") != wanted:
            _fs.atomic_write(user, wanted)
    conf = pgdata / "postgresql.conf"
    _fs.append_once(conf, USER_INCLUDE_LINE, "The branch's own settings (cygnet branch config).")
    _fs.atomic_write(pgdata / FINAL_FILE, preload_line(read(pgdata), preloaded))
    _fs.append_once(conf, FINAL_INCLUDE_LINE, "Cygnet's libraries, kept in the branch's own list.")
