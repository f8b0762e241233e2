"""Config files we own: PGDATA/cygnet.conf (settings), pg_hba.conf and pg_ident.conf.

postgresql.conf includes cygnet.conf at its end, so our settings override
initdb's defaults. postgresql.auto.conf (ALTER SYSTEM) is read last, so
write_settings removes the settings Cygnet owns from it (owned.py); a branch's
own settings (settings.py, cygnet.user.conf) are included after cygnet.conf.

TLS files are named by absolute paths outside pgdata: a private key inside
pgdata would travel with every clone, backup and copy of the data.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cygnet.errors import InternalError
from cygnet.postgres import _fs
from cygnet.postgres import settings as user_settings
from cygnet.postgres.handoff import socket_dirs
from cygnet.postgres.layout import MAX_SOCKET_DIR_LEN, POSTGRES_OS_USER, SUPERUSER_ROLE
from cygnet.postgres.owned import FENCE, PRELOADED
from cygnet.postgres.sizes import SizeClass

SETTINGS_FILE = "cygnet.conf"
INCLUDE_LINE = f"include_if_exists = '{SETTINGS_FILE}'"
IDENT_MAP = "cygnet"
REPLICATION_ROLE = "cygnet_replicator"
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./-]*$")


@dataclass(frozen=True)
class ServerTls:
    """The certificate, key and (optional) CA the server uses, all outside pgdata."""

    cert: Path
    key: Path
    ca: Path | None = None

    def paths(self) -> list[Path]:
        return [self.cert, self.key] + ([self.ca] if self.ca else [])


@dataclass(frozen=True)
class ArchiveSettings:
    """Continuous archiving: archive_command and the forced switch (archive_timeout)."""

    command: str
    timeout_s: int


@dataclass(frozen=True)
class RecoverySettings:
    """A point-in-time recovery: where WAL comes from and where it stops.

    hot_standby is off so the postmaster reports "ready" only once recovery
    has reached the target and promoted (no connections before)."""

    restore_command: str
    target_time: str = ""  # an ISO timestamp with a zone
    target_lsn: str = ""  # e.g. 0/3000060
    # Promoted by Postgres itself at the target, with hot_standby off: slower (see
    # _recovery_lines), for WAL a hot standby cannot replay (raised max_connections).
    promote_at_target: bool = False
    # Omitted: replay every WAL file the restore command offers.


@dataclass(frozen=True)
class StandbySettings:
    """A streaming replica (agent/replicas.py): the primary's conninfo (its password
    comes from a passfile outside pgdata) and the slot that holds its WAL."""

    conninfo: str
    slot: str


@dataclass(frozen=True)
class ClusterSettings:
    """What differs between clusters: where they listen, how big they are, their TLS.

    logical_workers_enabled=False sets max_logical_replication_workers = 0, so
    inherited subscriptions cannot start apply workers before they are disabled.
    With `tls`, TCP clients must use TLS (hostssl); without it TCP is clear text
    (host), which only the Postgres layer's own tests use.
    """

    port: int
    listen_addresses: str
    socket_dir: Path
    size: SizeClass
    logical_workers_enabled: bool = True
    tls: ServerTls | None = None
    # The cluster's major version (0: unknown), for settings that exist from a
    # given major on (_version_lines).
    major: int = 0
    archive: ArchiveSettings | None = None
    recovery: RecoverySettings | None = None
    standby: StandbySettings | None = None
    # The host's lease file: the cluster loads cygnet_fence, which stops writes
    # at the lease deadline (agent/lease.py, docs/ha.md "Fencing").
    fence_file: Path | None = None
    # The database's own failsafe deadline, which extends the host's lease while
    # every replica confirms this primary (agent/failsafe.py).
    failsafe_file: Path | None = None


def _fence_lines(fence_file: Path | None, failsafe_file: Path | None) -> list[str]:
    if fence_file is None:
        return []
    for path in (fence_file, failsafe_file):
        if path is not None and not _SAFE_PATH.match(str(path)):
            raise InternalError(f"lease file {str(path)!r} is not a plain absolute path")
    # wal_log_hints: an old primary can be rewound (pg_rewind) to follow a new one
    # (and full_page_writes stays on, see render_settings).
    return [f"cygnet_fence.deadline_file = '{fence_file}'", "wal_log_hints = on",
            *([f"cygnet_fence.failsafe_file = '{failsafe_file}'"] if failsafe_file else [])]


def preloaded(settings: ClusterSettings) -> tuple[str, ...]:
    """The libraries Cygnet itself preloads into a cluster run with `settings`."""
    return PRELOADED + FENCE * bool(settings.fence_file)


def _check(settings: ClusterSettings) -> None:
    if not 1 <= settings.port <= 65535:
        raise InternalError(f"port {settings.port} is out of range")
    sock = str(settings.socket_dir)
    if not _SAFE_PATH.match(sock) or len(sock) > MAX_SOCKET_DIR_LEN:
        raise InternalError(f"socket dir {sock!r} is not a short plain absolute path")
    for addr in settings.listen_addresses.split(","):
        addr = addr.strip()
        if addr not in ("*", "localhost"):
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise InternalError(f"listen address {addr!r} is not an IP address") from None
    for path in settings.tls.paths() if settings.tls else []:
        # Absolute: Postgres reads a relative path from pgdata, where no key belongs.
        if not _SAFE_PATH.match(str(path)):
            raise InternalError(f"TLS file {str(path)!r} is not a plain absolute path")


def _tls_lines(tls: ServerTls | None) -> list[str]:
    if tls is None:
        return ["ssl = off"]
    return [
        "ssl = on",
        f"ssl_cert_file = '{tls.cert}'",
        f"ssl_key_file = '{tls.key}'",
        # The CA lets clients with certificates of the same PKI authenticate later.
        f"ssl_ca_file = '{tls.ca or ''}'",
        "ssl_min_protocol_version = 'TLSv1.2'",
    ]


def _version_lines(major: int) -> list[str]:
    """Settings only some majors know (an unknown one stops the postmaster)."""
    lines = []
    if major >= 17:
        # WAL summaries feed incremental backups, which Cygnet does not take:
        # no summarizer process in every branch.
        lines.append("summarize_wal = off")
    if major >= 18:
        # io_uring needs a kernel and filesystem that allow it (zfs-fuse does
        # not help it); worker is portable. Few workers: hosts run many clusters.
        lines += ["io_method = worker", "io_workers = 2"]
    return lines


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _archive_lines(archive: ArchiveSettings | None) -> list[str]:
    if archive is None:
        return ["archive_mode = off"]
    return ["archive_mode = on", f"archive_command = {_quoted(archive.command)}",
            f"archive_timeout = {archive.timeout_s}",
            # Full-page images dominate WAL after each checkpoint (2.5 GB in 5 minutes
            # of pgbench -R 500 on 2 GB): lz4 shrinks them cheaply, and with them the
            # archive, its staging and the replay of a point-in-time recovery.
            "wal_compression = lz4"]


def _recovery_lines(recovery: RecoverySettings | None, major: int) -> list[str]:
    if recovery is None:
        return []
    lines = [f"restore_command = {_quoted(recovery.restore_command)}",
             "recovery_target_timeline = 'latest'"]
    if major >= 15:
        # Full-page writes are off, so the replay reads every page it changes:
        # look further ahead in the WAL and advise more of those reads at once.
        # Measured on zfs-fuse (benchmarks/README.md): 5-10% off a 15 s replay.
        lines += ["maintenance_io_concurrency = 64", "wal_decode_buffer_size = 2MB"]
    if not (recovery.target_time or recovery.target_lsn):
        return [*lines, "hot_standby = off"]
    if recovery.target_time:
        lines.append(f"recovery_target_time = {_quoted(recovery.target_time)}")
    else:
        lines.append(f"recovery_target_lsn = {_quoted(recovery.target_lsn)}")
    if recovery.promote_at_target:
        return [*lines, "recovery_target_action = 'promote'", "hot_standby = off"]
    # Paused at the target, then promoted with pg_promote() (agent/recovery.py): a
    # promotion Postgres is asked for checkpoints in the background, whereas one it
    # starts by itself at the target ('promote') first writes every dirty buffer, which
    # after a long replay takes seconds. Pausing needs hot_standby.
    return [*lines, "recovery_target_action = 'pause'", "hot_standby = on"]


def _standby_lines(standby: StandbySettings | None) -> list[str]:
    if standby is None:
        return []
    # hot_standby serves reads; feedback keeps the primary's vacuum from
    # removing rows a replica's query still reads.
    # A walreceiver cut off (its primary restarted: a fence lifted, a rejoin) tries
    # again after wal_retrieve_retry_interval; with synchronous commit every commit
    # on the primary waits for it, so 5 s (the default) would be 5 s of writes held.
    return [f"primary_conninfo = {_quoted(standby.conninfo)}",
            f"primary_slot_name = {_quoted(standby.slot)}",
            "hot_standby = on", "hot_standby_feedback = on",
            "wal_retrieve_retry_interval = '500ms'"]


def render_settings(settings: ClusterSettings) -> str:
    """The text of cygnet.conf for `settings` (validated; raises InternalError)."""
    _check(settings)
    size = settings.size
    lines = [
        "# Written by cygnetd; edits are overwritten.",
        f"port = {settings.port}",
        f"listen_addresses = '{settings.listen_addresses}'",
        # The second directory holds the endpoint's handoff listener (postgres/handoff.py).
        "unix_socket_directories = "
        f"'{', '.join(map(str, socket_dirs(settings.socket_dir)))}'",
        f"shared_buffers = {size.shared_buffers_mb}MB",
        f"max_connections = {size.max_connections}",
        f"work_mem = {size.work_mem_mb}MB",
        f"maintenance_work_mem = {size.maintenance_work_mem_mb}MB",
        f"effective_cache_size = {size.effective_cache_size_mb}MB",
        f"max_wal_size = {size.max_wal_size_mb}MB",
        f"max_worker_processes = {size.max_worker_processes}",
        f"autovacuum_max_workers = {size.autovacuum_max_workers}",
        # Query statistics for every database, and the fence on a replicated
        # primary; cygnet.final.conf repeats it after a branch's own list.
        f"shared_preload_libraries = '{','.join(preloaded(settings))}'",
        *_fence_lines(settings.fence_file, settings.failsafe_file),
        # A fenced primary that loses its lease may have to rejoin by pg_rewind,
        # which reads its own WAL back to the last checkpoint before the split:
        # keep up to one checkpoint distance of it rather than recycle it.
        *([f"wal_keep_size = {size.max_wal_size_mb}MB"] if settings.fence_file else []),
        "password_encryption = 'scram-sha-256'",
        # A branch archives into its own spool only (agent/archive.py), never its parent's.
        *_archive_lines(settings.archive),
        *_recovery_lines(settings.recovery, settings.major),
        *_standby_lines(settings.standby),
        # Durability stays at Postgres' defaults, whatever a template carried.
        "fsync = on",
        # Every Cygnet cluster lives on ZFS, which is copy-on-write: a block is
        # never half-overwritten, so torn pages cannot happen and full-page
        # images only bloat WAL (they were ~all of a point-in-time replay).
        # pg_backup_start forces them on by itself; docs/durability.md. A fenced
        # (replicated) cluster keeps them: pg_rewind refuses a source without.
        f"full_page_writes = {'on' if settings.fence_file else 'off'}",
        "synchronous_commit = on",
        # ZFS is copy-on-write: recycling or zero-filling segments gains nothing.
        # A zero-filled segment is 16 MiB of a branch's own (a clone that starts
        # at a segment boundary creates one at once), and fresh segments end in
        # zeros, so one closed early by archive_timeout costs its WAL only (in
        # the spool and in the repository), not 16 MiB.
        "wal_recycle = off", "wal_init_zero = off",
        # A branch starts with crash recovery, which first fsyncs every file in
        # the data dir: a cost that grows with the database. syncfs() does the
        # same in one call per filesystem, so branching stays size-independent.
        "recovery_init_sync_method = syncfs",
        # The postmaster's stderr is the log file; no collector process per cluster.
        "log_destination = 'stderr'",
        "logging_collector = off",
        "log_line_prefix = '%m [%p] %q%u@%d '",
        *_tls_lines(settings.tls),
        *_version_lines(settings.major),
    ]
    if not settings.logical_workers_enabled:
        lines.append("max_logical_replication_workers = 0")
    return "\n".join(lines) + "\n"


def write_settings(pgdata: Path, settings: ClusterSettings) -> None:
    """Atomically writes PGDATA/cygnet.conf and makes sure postgresql.conf includes it.

    Also rewrites pg_hba.conf/pg_ident.conf (so data made by older versions, or
    cloned from an older template, gets today's rules at its next start) and
    creates the branch's socket dir (postgres, 0700) if it is missing.
    """
    text = render_settings(settings)
    ensure_socket_dirs(settings.socket_dir)
    _fs.atomic_write(pgdata / SETTINGS_FILE, text)
    ensure_include(pgdata)
    # Owned settings win over ALTER SYSTEM; the branch's own settings come next,
    # and a final file keeps Cygnet's libraries in the branch's own list.
    user_settings.prepare(pgdata, preloaded(settings))
    write_access_rules(pgdata, ssl=settings.tls is not None)


def ensure_include(pgdata: Path) -> None:
    """Appends the include of cygnet.conf to postgresql.conf unless it is already there."""
    _fs.append_once(pgdata / "postgresql.conf", INCLUDE_LINE,
                    "Cygnet's settings win: keep this line last.")


def ensure_socket_dirs(socket_dir: Path) -> None:
    """The branch's socket dir and its handoff dir in it (postgres, 0700)."""
    for path in socket_dirs(socket_dir):
        _fs.ensure_postgres_dir(path)


def socket_dir_of(pgdata: Path) -> Path | None:
    """The first of unix_socket_directories in PGDATA/cygnet.conf, or None if absent."""
    try:
        text = (pgdata / SETTINGS_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    match = re.search(r"^unix_socket_directories = '([^']*)'$", text, re.MULTILINE)
    return Path(match.group(1).split(",")[0].strip()) if match else None


def render_hba(ssl: bool = True) -> str:
    """pg_hba.conf: peer over the socket (mapped), scram over TCP, never trust.

    With `ssl`, the TCP rules are hostssl: a clear-text TCP connection matches
    no rule and is refused.
    """
    tcp = "hostssl" if ssl else "host   "
    return (
        "# Written by cygnetd; edits are overwritten.\n"
        "# TYPE  DATABASE     USER  ADDRESS    METHOD\n"
        f"local   all          all              peer map={IDENT_MAP}\n"
        f"local   replication  all              peer map={IDENT_MAP}\n"
        f"{tcp} all          all   0.0.0.0/0  scram-sha-256\n"
        f"{tcp} all          all   ::/0       scram-sha-256\n"
        # Replicas stream with their own role (agent/replicas.py), never the superuser.
        f"{tcp} replication  {REPLICATION_ROLE} 0.0.0.0/0 scram-sha-256\n"
        f"{tcp} replication  {REPLICATION_ROLE} ::/0 scram-sha-256\n"
    )


def render_ident() -> str:
    """pg_ident.conf: OS users root (the daemon) and postgres may log in as role postgres."""
    return (
        "# Written by cygnetd; edits are overwritten.\n"
        "# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n"
        f"{IDENT_MAP}   root             {SUPERUSER_ROLE}\n"
        f"{IDENT_MAP}   {POSTGRES_OS_USER:<16} {SUPERUSER_ROLE}\n"
    )


def write_access_rules(pgdata: Path, *, ssl: bool = True) -> None:
    """Atomically writes pg_hba.conf and pg_ident.conf (read at start or reload)."""
    _fs.atomic_write(pgdata / "pg_ident.conf", render_ident())
    _fs.atomic_write(pgdata / "pg_hba.conf", render_hba(ssl))
