"""LSNs ("0/3000060"), WAL file names and the LSN range of each segment."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cygnet.errors import InvalidArgument

SEGMENT_SIZE = 16 * 1024 * 1024  # initdb's default; Cygnet's templates keep it
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")


def parse_lsn(text: str, field: str = "lsn") -> int:
    match = _LSN.match(text.strip())
    if not match:
        raise InvalidArgument(field, f"{text[:40]!r} is not an LSN such as 0/3000060")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass(frozen=True)
class Segment:
    """A WAL segment file: timeline, and the LSNs [start, end) it holds."""

    name: str
    timeline: int
    start: int
    end: int

    @property
    def number(self) -> int:
        return self.start // SEGMENT_SIZE


def segment(name: str, size: int = SEGMENT_SIZE) -> Segment | None:
    """The segment a WAL file name denotes; None for history and other files."""
    match = _SEGMENT.match(name)
    if not match:
        return None
    per_log = 0x100000000 // size
    number = int(match.group(2), 16) * per_log + int(match.group(3), 16)
    return Segment(name, int(match.group(1), 16), number * size, (number + 1) * size)


def is_history(name: str) -> bool:
    return _HISTORY.match(name) is not None


def segment_name(timeline: int, lsn: int, size: int = SEGMENT_SIZE) -> str:
    number = lsn // size
    per_log = 0x100000000 // size
    return f"{timeline:08X}{number // per_log:08X}{number % per_log:08X}"
