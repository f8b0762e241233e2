"""Keeps the Postgres port range out of the kernel's ephemeral ports.

Linux gives outgoing connections (and binds to port 0) a source port from
`net.ipv4.ip_local_port_range`, 32768-60999 by default, which holds Cygnet's
default range (54000-54999). A stopped branch keeps its port, and a postmaster
restarts on the port it had: if an outgoing connection holds that port at that
moment, Postgres cannot bind it and the start fails. Ports listed in
`net.ipv4.ip_local_reserved_ports` are never handed out that way, while an
explicit bind (the postmaster's) still works. So cygnetd adds its range there at
each start, before any postmaster starts; the setting does not survive a
reboot, and the next start sets it again.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

PROC_NET = Path("/proc/sys/net/ipv4")
Span = tuple[int, int]


def parse_spans(text: str) -> list[Span]:
    """The kernel's list, e.g. "7433,54000-54999" (empty: none); ValueError if malformed."""
    spans = []
    for item in text.replace("\n", "").split(","):
        item = item.strip()
        if not item:
            continue
        low, dash, high = item.partition("-")
        span = (int(low), int(high) if dash else int(low))
        if not 0 < span[0] <= span[1] <= 65535:
            raise ValueError(f"not a port range: {item!r}")
        spans.append(span)
    return spans


def merged(spans: list[Span]) -> list[Span]:
    """The same ports as sorted, non-touching spans."""
    out: list[Span] = []
    for low, high in sorted(spans):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def format_spans(spans: list[Span]) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in spans)


def covered(spans: list[Span], want: Span) -> bool:
    return any(lo <= want[0] and want[1] <= hi for lo, hi in merged(spans))


def reserve(low: int, high: int, proc: Path = PROC_NET) -> None:
    """Adds low-high to the reserved ports where it overlaps the ephemeral range.

    Never fails the start: where /proc/sys is read-only (a container) or cygnetd
    is not root, it logs a warning naming the setting instead.
    """
    try:
        first, last = (int(x) for x in (proc / "ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return  # not Linux's procfs: nothing to reserve in
    if high < first or low > last:
        return
    path = proc / "ip_local_reserved_ports"
    try:
        reserved = parse_spans(path.read_text())
        if covered(reserved, (low, high)):
            return
        path.write_text(format_spans(merged([*reserved, (low, high)])) + "\n")
    except (OSError, ValueError) as exc:
        log.warning("ports %d-%d overlap the kernel's ephemeral ports (%d-%d) and could not "
                    "be reserved (%s): an outgoing connection may take a stopped branch's "
                    "port; add them to net.ipv4.ip_local_reserved_ports",
                    low, high, first, last, exc)
        return
    log.info("reserved ports %d-%d from the kernel's ephemeral ports (%d-%d) in "
             "net.ipv4.ip_local_reserved_ports", low, high, first, last)
