"""The audit log: one JSON line per mutating call and per secret read.

Each line: time, identity (and `via` when the coordinator forwarded the call),
role, method, target (database, branch, snapshot, host named in the request),
request id and outcome (the status code name). Never a secret: only the
fields listed in TARGET_FIELDS are copied from a request.

Sinks, from the `audit_log` setting: a file path (lines appended), or empty:
the systemd journal (SYSLOG_IDENTIFIER=cygnet-audit) when the daemon runs under
systemd, else the daemon's own log (logger cygnet.audit).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from cygnet.api.v1.agent_pb2 import CreateDatabaseRequest

log = logging.getLogger("cygnet.audit")

# Request fields that say what a call acts on (never a password or a URI).
TARGET_FIELDS = ("database", "branch", "name", "parent", "snapshot", "other", "host_id",
                 "backup_id", "backup_ids", "database_name", "branch_name")
BRANCH_REF_FIELDS = ("database", "name", "branch_id")
MAX_VALUE = 200  # a hostile 20 KB name must not make a 20 KB audit line


def _short(value: str) -> str:
    return value if len(value) <= MAX_VALUE else value[:MAX_VALUE] + "…"


def _render(value: Any) -> str | None:
    if isinstance(value, CreateDatabaseRequest):  # the coordinator's wrapper
        return _short(value.name) if value.name else None
    if isinstance(value, Message):
        parts = {f: getattr(value, f) for f in BRANCH_REF_FIELDS
                 if f in value.DESCRIPTOR.fields_by_name and getattr(value, f)}
        if not parts:
            return None
        ref = "/".join(str(parts[f]) for f in ("database", "name") if f in parts)
        if "branch_id" in parts:
            ref = f"{ref}#{parts['branch_id']}" if ref else str(parts["branch_id"])
        return _short(ref)
    if isinstance(value, str | int) and not isinstance(value, bool):
        return _short(str(value)) if value else None
    if isinstance(value, Sequence):  # repeated ids
        items = [str(v) for v in value]
        return _short(",".join(items)) if items else None
    return None


def target_of(request: Message | None) -> dict[str, str]:
    if request is None:
        return {}
    fields = request.DESCRIPTOR.fields_by_name
    target: dict[str, str] = {}
    for name in TARGET_FIELDS:
        if name in fields:
            rendered = _render(getattr(request, name))
            if rendered:
                target[name] = rendered
    return target


def request_id_of(request: Message | None) -> str:
    if request is None:
        return ""
    if "request_id" in request.DESCRIPTOR.fields_by_name:
        return _short(str(getattr(request, "request_id")))  # noqa: B009 - a Message
    inner = getattr(request, "database", None)  # the coordinator's CreateDatabase wrapper
    return _short(inner.request_id) if isinstance(inner, CreateDatabaseRequest) else ""


class AuditLog:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        # journald sets JOURNAL_STREAM for services whose stderr it collects.
        self.journal = self.path is None and bool(os.environ.get("JOURNAL_STREAM"))
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append("")  # fail at start, not on the first call, when unwritable

    def _append(self, line: str) -> None:
        assert self.path is not None
        # Opened per line: cheap next to the calls it records, and logrotate-safe.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            if line:
                f.write(line + "\n")

    def write(self, record: dict[str, Any]) -> None:
        record = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                  **record}
        line = json.dumps(record, sort_keys=False, ensure_ascii=False)
        try:
            if self.path is not None:
                self._append(line)
            elif self.journal:
                from systemd import journal  # type: ignore[import-untyped]

                journal.send(line, SYSLOG_IDENTIFIER="cygnet-audit", PRIORITY=6,
                             CYGNET_AUDIT="1")
            else:
                log.info("%s", line)
        except OSError as exc:
            log.error("audit line not written (%s): %s", exc, line)
