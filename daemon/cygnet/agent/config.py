"""cygnetd settings: defaults, an optional TOML file, then command-line overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cygnet.agent.backups.schedule import check_host_defaults as check_schedule_defaults
from cygnet.errors import InvalidArgument
from cygnet.settings import load_settings

# Each field's type is checked as written (cygnet/settings.py): add a setting
# as one `name: type = default` line with a comment that says what it is for.


RECORD_SIZES = ("8K", "16K", "32K", "64K", "128K")


@dataclass(frozen=True)
class AgentConfig:
    # ZFS pools this host's databases may live on.
    pools: tuple[str, ...] = ()
    # Postgres data is mounted below here, one directory per pool.
    mount_root: Path = Path("/var/lib/cygnet/mnt")
    # Certificates and other daemon state.
    state_dir: Path = Path("/var/lib/cygnet")
    # The backup repository (a directory); empty means STATE_DIR/backups.
    backup_dir: Path | None = None
    # Unix sockets: the daemon's own and one directory per branch.
    run_dir: Path = Path("/run/cygnet")
    # Local admin API (root only). Empty disables it.
    socket_path: Path | None = None
    # Remote API with TLS, host:port. Empty disables it.
    listen: str = ""  # needs tls_client_ca (mutual TLS); empty: the unix socket only
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Postgres' own certificate and key (fleet CA; never tls_key, which branches could read).
    postgres_tls_cert: Path | None = None
    postgres_tls_key: Path | None = None
    # Ports given to Postgres clusters, inclusive.
    port_min: int = 54000
    port_max: int = 54999
    # Where Postgres listens, and the host name put in connection strings.
    postgres_listen: str = ""  # empty: the advertise_host addresses only
    advertise_host: str = "127.0.0.1"
    postgres_root: Path = Path("/usr/lib/postgresql")
    # The major a database gets when none is asked for (pinned: docs/versions.md).
    default_postgres_version: str = "15"
    host_id: str = ""
    # New databases and branches are refused below this much free pool space:
    # a cluster needs room for WAL from its first second.
    min_free_bytes: int = 128 * 1024 * 1024
    # Space each pool keeps in reserve (POOL/cygnet/reserve-N) and gives up so that
    # deletes and stops work when the pool is full; 0 keeps none.
    reserve_bytes: int = 64 * 1024 * 1024
    # How often the supervisor checks that postmasters are alive.
    supervise_interval: float = 1.0
    # Scale to zero (agent/scale.py): a branch with no client connection for this
    # many seconds is suspended (0: never), unless its cygnet:suspend-after says
    # otherwise; idle branches are looked for every idle_check_interval seconds.
    suspend_after: float = 300.0
    idle_check_interval: float = 15.0
    # Prometheus /metrics on HOST:PORT (e.g. 127.0.0.1:9433). Empty disables it.
    metrics_listen: str = ""
    # How often the gauges (pool space, branches by state) are recomputed.
    metrics_interval: float = 15.0
    # Fleet membership (docs/coordinator.md): the coordinator's host:port, the
    # fleet CA, and what the host tells it. Empty coordinator: standalone host.
    coordinator: str = ""
    coordinator_ca: Path | None = None
    # Require client certificates signed by this CA on the TLS listener.
    tls_client_ca: Path | None = None
    # host:port the coordinator dials; empty: advertise_host and the listen port.
    advertise_api: str = ""
    zone: str = ""
    # Lab only: serve TCP clients without certificates, as admin (logged loudly at start).
    allow_tcp_without_client_certs: bool = False
    # Identity (certificate common name or KIND/*) -> admin, operator or reader (rpc/roles.py).
    roles: dict[str, str] = field(default_factory=dict)
    # Audit lines go to this file; None: the journal under systemd, else the daemon's log.
    audit_log: Path | None = None
    # Deny list of revoked certificate serials and identities, re-read when it changes.
    revoked: Path | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # Memory offered to clusters; 0 reads /proc/meminfo.
    memory_bytes: int = 0
    # Clusters this host runs at most; 0 leaves it to the coordinator.
    max_clusters: int = 0
    # WAL archiving (docs/durability.md): where archive_command spools WAL before
    # cygnetd moves it into the backup repository (empty: STATE_DIR/wal-spool),
    # the spool's bound per branch (past it archive_command fails and Postgres
    # keeps the WAL), the forced segment switch that bounds the RPO, and how
    # often the spool is ingested.
    wal_spool_dir: Path | None = None
    wal_spool_max_bytes: int = 2 * 1024 * 1024 * 1024
    wal_archive_timeout: int = 2
    wal_ingest_interval: float = 0.25
    # Archived WAL of a branch that no longer exists (a deleted branch, or every
    # branch of a deleted database, which `cygnet db restore` reads) is kept this
    # many days after its last segment, then removed from the host's repository;
    # a deleted database's backups as many days after its deletion (backup_janitor).
    wal_deleted_retention_days: float = 7.0
    # Failsafe mode (docs/ha.md "Failsafe"): while no coordinator renews this host's
    # lease, its replicated primaries keep writing as long as every replica's host
    # confirms them (and holds off their failover). Off: they fence after 2/3 TTL.
    failsafe: bool = True
    # shared_buffers (MB) while a point-in-time recovery replays, when larger than
    # the size class's: with too few buffers the replay spends its time writing
    # evicted pages back through ZFS (2 GB, 5 minutes of WAL: 35-45 s of redo with
    # medium's 512 MB, 12-15 s with 1024). The branch keeps them until its next
    # restart (a suspend, say). 0: the size class's own.
    recovery_shared_buffers_mb: int = 1024
    # Suspended branches' datasets are unmounted ("parked") and mounted again when
    # they wake: a host holds thousands of branches without thousands of mounts
    # (zfs-fuse serves at most 1,000 filesystems; OpenZFS mounts every mounted one
    # at import). Off: they stay mounted.
    park_suspended: bool = True
    # The catalog is kept on disk (STATE/catalog.json and its journal, saved about
    # once a second and at a clean stop), and a start, after a stop or a crash,
    # serves from it while ZFS is read whole in the background
    # (agent/catalog_file.py): on zfs-fuse that read costs about 10 ms a dataset.
    # Off: every start reads first.
    catalog_warm_start: bool = True
    # Off-host repository in S3-compatible storage (docs/durability.md): the
    # endpoint URL (empty: none) and bucket. Empty credentials: the environment's
    # (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). Never shown in logs or errors.
    offsite_endpoint: str = ""
    offsite_bucket: str = ""
    offsite_region: str = "us-east-1"
    offsite_access_key_id: str = field(default="", repr=False)
    offsite_secret_access_key: str = field(default="", repr=False)
    # Client-side AES-256-GCM keys: id -> 32 random bytes in base64. New objects
    # use offsite_key_id; keep old keys while objects made with them are kept.
    offsite_keys: dict[str, str] = field(default_factory=dict, repr=False)
    offsite_key_id: str = ""
    # Object lock (COMPLIANCE) days on each upload, where the bucket has object lock; 0: none.
    offsite_lock_days: int = 0
    # What the repository prunes (retention, deleted databases) is deleted from the
    # bucket too, once object lock allows; false keeps it for the bucket's own rules.
    offsite_delete_pruned: bool = True
    # Seconds between the uploader's looks for new objects (it is also woken by backups).
    offsite_interval: float = 2.0
    # The Postgres-protocol endpoint (docs/endpoints.md): its TCP port (0 disables
    # it), on postgres_listen's addresses unless endpoint_listen names others (a,b).
    endpoint_port: int = 5432
    endpoint_listen: str = ""
    # DNS domain of endpoint names (DB--BRANCH.DOMAIN, routed by TLS SNI); empty:
    # connection strings name advertise_host and route with options=endpoint=.
    endpoint_domain: str = ""
    # Who moves a routed connection's bytes: "process", a relay process that
    # outlives cygnetd restarts (and exits endpoint_relay_linger seconds after
    # the last connection and cygnetd are gone), or "thread", inside cygnetd.
    endpoint_relay: str = "process"
    endpoint_relay_linger: float = 30.0
    # A connection routed by SNI is handed to the branch's own postmaster
    # (postgres/handoff.py): nothing sits in its data path. false relays it.
    endpoint_handoff: bool = True
    # ZFS recordsize of the datasets made under POOL/cygnet (set once, when the
    # root is made). Empty: 16K on OpenZFS (a page write re-sends 16K, not 128K,
    # in a move's incremental rounds, docs/ha.md), ZFS's 128K on zfs-fuse, which
    # aborted on a full pool with 16K records.
    record_size: str = ""
    # How many of a database's datasets a move round receives at once, on the
    # target (docs/ha.md "Moving databases"): the final round runs while the
    # database is down, and each stream has a fixed cost.
    move_streams: int = 4
    # Schedules of databases that set none (docs/durability.md "Schedules and
    # retention"): automatic snapshots of main every N seconds (0: off), backups
    # on a cron expression ("": off), and the retention both are pruned by.
    schedule_snapshot_every: int = 0
    schedule_backup_cron: str = ""
    schedule_keep_last: int = 0
    schedule_keep_hourly: int = 24
    schedule_keep_daily: int = 7
    schedule_keep_weekly: int = 4
    schedule_keep_monthly: int = 0
    schedule_keep_within: int = 0  # seconds
    # How often the scheduler looks for due snapshots and backups, in seconds.
    schedule_tick: float = 30.0
    # The event journal (POOL/cygnet/events): whole segments of a tenth of
    # events_max are trimmed past this many events or past this age.
    events_max: int = 100_000
    events_max_age_days: float = 30.0
    # Webhooks: each event is POSTed as JSON to these URLs, signed with HMAC-SHA256
    # with the secret read from webhook_secret_file (docs/operations.md "Events").
    webhook_urls: tuple[str, ...] = ()
    webhook_secret_file: Path | None = None
    # How often expired branches and lapsed protections are looked for.
    expiry_interval: float = 30.0

    @property
    def admin_socket(self) -> Path:
        return self.socket_path or self.run_dir / "cygnetd.sock"

    @property
    def backup_repository(self) -> Path:
        return self.backup_dir or self.state_dir / "backups"

    def validate(self) -> AgentConfig:
        if not self.pools:
            raise InvalidArgument("pools", "at least one ZFS pool must be configured")
        if not 1024 <= self.port_min <= self.port_max <= 65535:
            span = f"{self.port_min}-{self.port_max}"
            raise InvalidArgument("port_range", f"{span} is not a valid range")
        if self.endpoint_relay not in ("process", "thread"):
            raise InvalidArgument("endpoint_relay", f"{self.endpoint_relay!r} is neither "
                                  "'process' nor 'thread'")
        if self.endpoint_relay_linger < 0:
            raise InvalidArgument("endpoint_relay_linger", "must not be negative")
        if not 0 <= self.endpoint_port <= 65535:
            raise InvalidArgument("endpoint_port", f"{self.endpoint_port} is not a port (0: off)")
        if self.coordinator and not (self.coordinator_ca and self.tls_cert and self.tls_key):
            raise InvalidArgument("coordinator", "needs coordinator_ca, tls_cert and tls_key "
                                  "(a fleet host certificate, see docs/coordinator.md)")
        if not 1 <= self.move_streams <= 64:
            raise InvalidArgument("move_streams", f"{self.move_streams} is not 1 to 64")
        if self.record_size and self.record_size not in RECORD_SIZES:
            raise InvalidArgument("record_size", f"{self.record_size!r} is not one of "
                                  f"{', '.join(RECORD_SIZES)} (empty: automatic)")
        if self.recovery_shared_buffers_mb < 0:
            raise InvalidArgument("recovery_shared_buffers_mb", "must be 0 (the size class's "
                                  f"own) or more, not {self.recovery_shared_buffers_mb}")
        if self.wal_deleted_retention_days < 1 / 24:
            raise InvalidArgument("wal_deleted_retention_days",
                                  "must be at least one hour (1/24): a restore of a deleted "
                                  "database reads that WAL")
        check_schedule_defaults(self)
        return self


def load_config(path: Path | None, overrides: dict[str, Any]) -> AgentConfig:
    """Defaults <- TOML file <- overrides (None values in overrides are ignored)."""
    return load_settings(AgentConfig, path, overrides).validate()
