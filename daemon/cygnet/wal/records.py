"""One WAL record's header, read from its segment file: enough to tell the
segment switch that archive_timeout forces from anything a client wrote."""

from __future__ import annotations

import struct
from pathlib import Path

PAGE_SIZE = 8192  # XLOG_BLCKSZ
LONG_PAGE_HEADER = 40  # SizeOfXLogLongPHD: the header of a segment's first page
# XLogRecord's start: xl_tot_len, xl_xid, xl_prev, xl_info, xl_rmid (unchanged since 9.5).
_HEADER = struct.Struct("<IIQBB")
_RECORD_SIZE = 24  # SizeOfXLogRecord
_RM_XLOG = 0
_XLOG_SWITCH = 0x40
_RMGR_INFO = 0xF0  # the bits of xl_info that belong to the resource manager


def is_switch_at(segment: Path, offset: int) -> bool:
    """Whether the record at `offset` in `segment` is an XLOG_SWITCH; False when
    it cannot be read."""
    try:
        with segment.open("rb") as f:
            f.seek(offset)
            head = f.read(_HEADER.size)
    except OSError:
        return False
    if len(head) < _HEADER.size:
        return False
    total, _, _, info, rmid = _HEADER.unpack(head)
    return bool(total >= _RECORD_SIZE and rmid == _RM_XLOG and info & _RMGR_INFO == _XLOG_SWITCH)


def next_segment_start(lsn: int, segment_size: int) -> int:
    """The first record position of the segment after `lsn`'s."""
    return (lsn // segment_size + 1) * segment_size + LONG_PAGE_HEADER
