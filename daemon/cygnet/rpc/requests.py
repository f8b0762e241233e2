"""What every Agent and Backups request must look like, field by field.

One table, applied by the error interceptor before any handler runs (see
validate.py). A test checks that every field of every request of both
services has an entry, so a new field cannot slip through unchecked.
"""

from __future__ import annotations

import re
import time
from typing import Any

from cygnet.api.v1 import agent_pb2, backup_pb2, coordinator_pb2, schema_pb2
from cygnet.backup import cron, retention
from cygnet.errors import InvalidArgument
from cygnet.masking import rules as masking_rules
from cygnet.migrate import files as migrate_files
from cygnet.names import (
    shown,
    validate_backup_id,
    validate_id,
    validate_name,
    validate_reference,
    validate_request_id,
)
from cygnet.postgres.owned import is_owned
from cygnet.postgres.settings import check_name, check_value_text
from cygnet.rpc.validate import (
    Check,
    Rules,
    Validator,
    anything,
    integer_range,
    message_check,
    number_range,
)
from cygnet.schema.merge import Rename
from cygnet.wal.lsn import parse_lsn

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_HOSTNAME = re.compile(r"[A-Za-z0-9:][A-Za-z0-9_.:-]{0,252}")  # a name, IPv4 or IPv6
MAX_KEEP_LAST = 100_000
MAX_BYTES = 2**60  # an exbibyte: larger is a typo or a negative number


def token(path: str, value: str) -> None:
    """Versions, size classes and pool names: short plain words."""
    if not _TOKEN.fullmatch(value):
        raise InvalidArgument(path, f"{shown(value)} is not a valid value: letters, digits "
                              "and '_.:-', at most 64 characters")


MAX_DIGESTS = 200_000  # blocks asked for at once: a 3.2 MB request, under gRPC's 4 MiB


def block_digests(path: str, value: bytes) -> None:
    """Block digests, 16 bytes each (XXH3-128)."""
    if len(value) % 16 or len(value) > MAX_DIGESTS * 16:
        raise InvalidArgument(path, f"must be whole 16-byte digests, at most {MAX_DIGESTS:,} "
                              f"of them ({len(value)} bytes given)")


def reference(prefix: str) -> Check:
    """An "id or name" field: an id of kind `prefix` (db, br, sn) or a valid name."""
    def check(path: str, value: str) -> None:
        validate_reference(path, value, prefix)

    return check


def backup_id(path: str, value: str) -> None:
    validate_backup_id(path, value)


def branch_id(path: str, value: str) -> None:
    validate_id(path, value, "br")


def database_id(path: str, value: str) -> None:
    validate_id(path, value, "db")


def host_port(path: str, value: str) -> None:
    """host:port of another agent's API (an address the coordinator knows)."""
    hostname, _, port = value.rpartition(":")
    if not hostname or not port.isdigit() or not 0 < int(port) < 65536 \
            or not _HOSTNAME.fullmatch(hostname.removeprefix("[").removesuffix("]")):
        raise InvalidArgument(path, f"{shown(value)} is not host:port")


def name(path: str, value: str) -> None:
    validate_name(path, value)


def request_id(path: str, value: str) -> None:
    validate_request_id(path, value)


def _branch_ref_whole(path: str, ref: Any) -> None:
    if not ref.branch_id and not ref.database:
        raise InvalidArgument(path, "give a branch_id, or a database and a branch name")


BRANCH_REF = message_check(
    {"branch_id": branch_id, "database": reference("db"), "name": reference("br")},
    whole=_branch_ref_whole)


def _one_target(request: Any) -> None:
    if bool(request.branch_name) == bool(request.database_name):
        raise InvalidArgument("branch_name", "give exactly one of branch_name (a new branch "
                              "of the backup's database) and database_name (a new database)")


def setting_name(path: str, value: str) -> None:
    """A key of a settings map (or a name to reset): a setting users may set."""
    check_name(value)
    if is_owned(value):
        raise InvalidArgument(f"settings.{value}", "is set by Cygnet and cannot be changed")


def _setting_values(request: Any) -> None:
    for key, value in request.settings.items():
        check_value_text(key, value)


MAX_TTL_SECONDS = 10 * 366 * 86400  # ten years: longer is a typo


def _seconds(path: str, value: Any) -> float:
    """A Timestamp's or Duration's seconds; one outside protobuf's own range (nanos
    negative or past a second, seconds past 10,000 years) is refused here."""
    try:
        return float(value.ToNanoseconds() / 1e9)
    except ValueError:
        raise InvalidArgument(path, "is out of range (seconds or nanos)") from None


def ttl(path: str, value: Any) -> None:
    """A google.protobuf.Duration that must be positive (a TTL, a protection lease)."""
    seconds = _seconds(path, value)
    if seconds <= 0:
        raise InvalidArgument(path, f"must be positive, got {seconds:g} s")
    if seconds > MAX_TTL_SECONDS:
        raise InvalidArgument(path, f"must be at most ten years, got {seconds:g} s")


def future_time(path: str, value: Any) -> None:
    """A google.protobuf.Timestamp in the future (an expiry)."""
    seconds = _seconds(path, value)
    if seconds <= time.time():
        raise InvalidArgument(path, "must be in the future")
    if seconds > time.time() + MAX_TTL_SECONDS:
        raise InvalidArgument(path, "must be at most ten years from now")


MAX_SUSPEND_AFTER_SECONDS = 366 * 86400  # a year: longer is a typo; 0 means never


def idle_timeout(path: str, value: Any) -> None:
    """A google.protobuf.Duration of whole seconds, zero or more (suspend_after)."""
    if value.nanos or value.seconds < 0:
        raise InvalidArgument(path, "must be whole seconds, zero (never) or more")
    if value.seconds > MAX_SUSPEND_AFTER_SECONDS:
        raise InvalidArgument(path, f"must be at most a year, got {value.seconds} s")


def _one_idle_timeout(request: Any) -> None:
    if request.HasField("suspend_after") and request.clear_suspend_after:
        raise InvalidArgument("clear_suspend_after",
                              "give at most one of suspend_after and clear_suspend_after")


def _one_expiry(request: Any) -> None:
    given = [f for f in ("ttl", "expires_at") if request.HasField(f)]
    if getattr(request, "clear_expiry", False):
        given.append("clear_expiry")
    if len(given) > 1:
        raise InvalidArgument(given[1], f"give at most one of {' and '.join(given)}")


def past_time(path: str, value: Any) -> None:
    """A google.protobuf.Timestamp of a recovery point: after 1970, nanos in range
    (one outside the recoverable window is OUT_OF_RANGE, from the handler)."""
    # Timestamp's own range: 0001-01-01 to 9999-12-31 (here from 1970, Cygnet's epoch).
    if not 0 <= value.seconds <= 253_402_300_799 or not 0 <= value.nanos < 1_000_000_000:
        raise InvalidArgument(path, "is not a valid time")


def lsn(path: str, value: str) -> None:
    """A WAL position such as 0/3000060 (cygnet/wal/lsn.py)."""
    if value:
        parse_lsn(value, path)


def _one_point(request: Any) -> None:
    """At most one of at_time and at_lsn; a point in time replaces the parent's snapshot."""
    if request.HasField("at_time") and request.at_lsn:
        raise InvalidArgument("at_lsn", "give at most one of at_time and at_lsn")
    point = request.HasField("at_time") or bool(request.at_lsn)
    for other in ("parent_snapshot", "upgrade_to"):
        if point and getattr(request, other, ""):
            raise InvalidArgument(other, "cannot be combined with at_time or at_lsn")


def _exactly_one_point(request: Any) -> None:
    _one_point(request)
    if not request.HasField("at_time") and not request.at_lsn:
        raise InvalidArgument("at_time", "give the point to restore to: at_time or at_lsn")


def _rules(fields: dict[str, Check], required: tuple[str, ...] = (),
           *whole: Any) -> Rules:
    return Rules(fields, frozenset(required), tuple(whole))


def backup_cron(path: str, value: str) -> None:
    cron.check(path, value)


def _keeps_something(path: str, msg: Any) -> None:
    if not any(getattr(msg, f.name) for f in msg.DESCRIPTOR.fields):
        raise InvalidArgument(path, "keeps nothing: give at least one keep rule of 1 or more")


MAX_SNAPSHOT_EVERY = 366 * 86400
RETENTION = message_check(
    {**{k: integer_range(0, retention.MAX_KEEP) for k in (
        "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly")},
     "keep_within_seconds": integer_range(0, retention.MAX_WITHIN_S)},
    whole=_keeps_something)


_RID = {"request_id": request_id}
_REF = {"branch": BRANCH_REF}

AGENT: dict[str, Rules] = {
    "CreateDatabase": _rules({"name": name, "postgres_version": token, "size_class": token,
                              "pool": token, "quota_bytes": integer_range(0, MAX_BYTES),
                              "settings": setting_name, **_RID}, ("name",), _setting_values),
    "GetDatabase": _rules({"database": reference("db")}, ("database",)),
    "ListDatabases": _rules({}),
    "DeleteDatabase": _rules({"database": reference("db"), "override_protection": anything,
                              **_RID}, ("database",)),
    "CreateBranch": _rules({"database": reference("db"), "name": name,
                            "parent": reference("br"), "parent_snapshot": reference("sn"),
                            "upgrade_to": token, "ttl": ttl, "expires_at": future_time,
                            "suspend_after": idle_timeout, "at_time": past_time, "at_lsn": lsn,
                            **_RID},
                           ("database", "name"), _one_expiry, _one_point),
    "GetBranch": _rules(_REF, ("branch",)),
    "ListBranches": _rules({"database": reference("db")}),
    "DeleteBranch": _rules({**_REF, "cascade": anything, "override_protection": anything,
                            **_RID}, ("branch",)),
    "ResetBranch": _rules({**_REF, "snapshot": reference("sn"), "override_protection": anything,
                           **_RID}, ("branch",)),
    "PromoteBranch": _rules({**_REF, "drop_old_main": anything, **_RID}, ("branch",)),
    "StartBranch": _rules({**_REF, **_RID}, ("branch",)),
    "StopBranch": _rules({**_REF, **_RID}, ("branch",)),
    "GetConnection": _rules(_REF, ("branch",)),
    "BranchHistory": _rules(_REF, ("branch",)),
    "RestoreBranch": _rules({**_REF, "at_time": past_time, "at_lsn": lsn, **_RID},
                            ("branch",), _exactly_one_point),
    "RestoreDatabase": _rules({"name": name, "new_name": name, "at_time": past_time,
                               "at_lsn": lsn, "pool": token, "from_host": token, **_RID},
                              ("name",), _one_point),
    "CreateSnapshot": _rules({**_REF, "name": name, **_RID}, ("branch", "name")),
    "ListSnapshots": _rules(_REF, ("branch",)),
    "DeleteSnapshot": _rules({**_REF, "snapshot": reference("sn"), **_RID},
                             ("branch", "snapshot")),
    "GetHostStatus": _rules({}),
    "GetBranchConfig": _rules(_REF, ("branch",)),
    "SetBranchConfig": _rules({**_REF, "settings": setting_name, "restart": anything, **_RID},
                              ("branch", "settings"), _setting_values),
    "ResetBranchConfig": _rules({**_REF, "names": setting_name, "restart": anything, **_RID},
                                ("branch",)),
    "ListExtensions": _rules({"database": reference("db")}, ("database",)),
    "UpdateBranch": _rules({**_REF, "ttl": ttl, "expires_at": future_time,
                            "clear_expiry": anything, "protection": integer_range(0, 2),
                            "protect_for": ttl, "suspend_after": idle_timeout,
                            "clear_suspend_after": anything, **_RID}, ("branch",), _one_expiry,
                           _one_idle_timeout),
    "WatchEvents": _rules({"cursor": integer_range(0, 2**63 - 1), "from_oldest": anything,
                           "follow": anything}),
    "SuspendBranch": _rules({**_REF, **_RID}, ("branch",)),
    "ResumeBranch": _rules({**_REF, **_RID}, ("branch",)),
    # Replicas (agent/replicas*.py): databases by id, hosts by id and address.
    "CreateReplica": _rules({"database": database_id, "primary_host_id": token,
                             "primary_address": host_port, "synchronous": anything, **_RID},
                            ("database", "primary_host_id", "primary_address")),
    "ListReplicas": _rules({"database": database_id}),
    "DeleteReplica": _rules({"database": database_id, **_RID}, ("database",)),
    "HandOverPrimary": _rules({"database": reference("db"), **_RID}, ("database",)),
    "PromoteReplica": _rules({"database": database_id, "min_lsn": lsn,
                              "wait_seconds": integer_range(0, 3600), **_RID}, ("database",)),
    "DemoteToReplica": _rules({"database": database_id, "primary_host_id": token,
                               "primary_address": host_port, "rewind": anything,
                               **_RID},
                              ("database", "primary_host_id", "primary_address")),
    "PrepareReplica": _rules({"database": database_id, "seed": anything,
                              "synchronous": anything, "caller_address": host_port},
                             ("database",)),
    "PrepareFailover": _rules({"database": database_id, "window_seconds": number_range(0, 300)},
                              ("database",)),
    "ConfirmPrimary": _rules({"database": database_id, "hold_seconds": number_range(0, 300)},
                             ("database",)),
    "ReleaseReplica": _rules({"database": database_id, "snapshot": token,
                              "keep_slot": anything}, ("database",)),
    "SendSnapshot": _rules({"database": database_id, "branch_id": branch_id,
                            "snapshot": token, "base_snapshot": token},
                           ("database", "branch_id", "snapshot")),
    # Moves (agent/moves.py).
    "MoveIn": _rules({"database": database_id, "source_host_id": token,
                      "source_address": host_port, **_RID},
                     ("database", "source_host_id", "source_address")),
    "PrepareMove": _rules({"database": database_id, "round": token, "final": anything},
                          ("database", "round")),
    "SendMoveStream": _rules({"database": database_id, "dataset": token, "snapshot": token,
                              "base_dataset": token, "base_snapshot": token},
                             ("database", "dataset", "snapshot")),
    "SendMoveArchive": _rules({"database": database_id}, ("database",)),
    "SendMoveBackups": _rules({"database": database_id, "digests": block_digests,
                               "release": anything}, ("database",)),
    "EndMove": _rules({"database": database_id, "moved": anything, **_RID}, ("database",)),
}

BACKUPS: dict[str, Rules] = {
    "CreateBackup": _rules({**_REF, **_RID}, ("branch",)),
    "ListBackups": _rules({"database": reference("db"), "branch": reference("br"),
                           "remote": anything}),
    "VerifyBackups": _rules({}),
    "RestoreBackup": _rules({"backup_id": backup_id, "branch_name": name,
                             "database_name": name, "pool": token, "remote": anything, **_RID},
                            ("backup_id",), _one_target),
    "PruneBackups": _rules({"keep_last": integer_range(0, MAX_KEEP_LAST),
                            "database": reference("db"), "backup_ids": backup_id, **_RID}),
    "DiffBranches": _rules({**_REF, "other": BRANCH_REF}, ("branch",)),
    "GetSchedule": _rules({"database": reference("db")}, ("database",)),
    "SetSchedule": _rules({"database": reference("db"),
                           "snapshot_every_seconds": integer_range(0, MAX_SNAPSHOT_EVERY),
                           "backup_cron": backup_cron, "retention": RETENTION,
                           "use_defaults": anything, **_RID}, ("database",)),
}


def sql_dbname(path: str, value: str) -> None:
    """A SQL database inside a branch's cluster: Postgres' limit, no NUL."""
    if len(value.encode()) > 63 or "\x00" in value:
        raise InvalidArgument(path, f"{shown(value)} is not a database name (at most 63 bytes)")


def rename_hint(path: str, value: str) -> None:
    Rename.parse(value, path)


def masking_text(path: str, value: str) -> None:
    """A masking rules file: parsed here, so a bad one names its line or column."""
    masking_rules.parse(value, path)


MIGRATION = message_check({"version": integer_range(1, 2**63 - 1),
                           "name": migrate_files.check_name,
                           "up": migrate_files.check_sql, "down": migrate_files.check_sql,
                           "file": migrate_files.check_file}, frozenset({"version"}))


SCHEMA: dict[str, Rules] = {
    "SchemaDiff": _rules({"a": BRANCH_REF, "b": BRANCH_REF, "dbname": sql_dbname}, ("a", "b")),
    "MergeSchema": _rules({"source": BRANCH_REF, "target": BRANCH_REF, "dry_run": anything,
                           "renames": rename_hint, "dbname": sql_dbname,
                           "concurrently": anything, **_RID}, ("source", "target")),
    "ApplyMigrations": _rules({"branch": BRANCH_REF, "migrations": MIGRATION,
                               "rehearse": anything, "dbname": sql_dbname, **_RID},
                              ("branch",)),
    "MigrationStatus": _rules({"branch": BRANCH_REF, "migrations": MIGRATION,
                               "dbname": sql_dbname}, ("branch",)),
    "RollbackMigrations": _rules({"branch": BRANCH_REF, "migrations": MIGRATION,
                                  "to_version": integer_range(0, 2**63 - 1),
                                  "dbname": sql_dbname, **_RID}, ("branch",)),
    "SetMaskingRules": _rules({"database": reference("db"), "rules": masking_text},
                              ("database", "rules")),
    "GetMaskingRules": _rules({"database": reference("db")}, ("database",)),
    "CreateMaskedBranch": _rules({"database": reference("db"), "name": name,
                                  "parent": reference("br"), "refresh": anything, **_RID},
                                 ("database", "name")),
}


# Each message of a heartbeat stream is checked as it arrives; the host id is
# then matched against the stream's certificate (coordinator/auth.py).
COORDINATOR: dict[str, Rules] = {
    "HeartbeatStream": _rules({"host_id": anything, "capacity": anything}, ("host_id",)),
    "CreateReplica": _rules({"database": reference("db"), "host_id": token,
                             "synchronous": anything, **_RID}, ("database",)),
    "ListReplicas": _rules({"database": reference("db")}, ("database",)),
    "DeleteReplica": _rules({"database": reference("db"), "host_id": token, **_RID},
                            ("database", "host_id")),
    "PromoteReplica": _rules({"database": reference("db"), "host_id": token,
                              "force": anything, "max_lag_bytes": integer_range(0, MAX_BYTES),
                              "remove_old_primary": anything, **_RID}, ("database",)),
    "MoveDatabase": _rules({"database": reference("db"), "to_host": token, **_RID},
                           ("database",)),
}


def _paths(package: Any, service: str, table: dict[str, Rules]) -> dict[str, Rules]:
    full = package.DESCRIPTOR.services_by_name[service].full_name
    return {f"/{full}/{method}": rules for method, rules in table.items()}


RULES: dict[str, Rules] = {**_paths(agent_pb2, "Agent", AGENT),
                           **_paths(backup_pb2, "Backups", BACKUPS),
                           **_paths(schema_pb2, "Schema", SCHEMA),
                           **_paths(coordinator_pb2, "Coordinator", COORDINATOR)}

VALIDATOR = Validator(RULES)
