"""The bridge from branches to the Postgres layer: paths, settings, start, stop, adopt."""

from __future__ import annotations

import functools
import logging
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from cygnet.agent import archive, lease, pgtls
from cygnet.agent import layout as L
from cygnet.agent.config import AgentConfig
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.postgres import fixup, process, sql
from cygnet.postgres.config import ClusterSettings, ServerTls, write_settings
from cygnet.postgres.layout import SUPERUSER_ROLE, ClusterLayout
from cygnet.postgres.sizes import size_class
from cygnet.postgres.versions import resolve_version

log = logging.getLogger("cygnet.agent")

ADMIN_ROLE = SUPERUSER_ROLE
DEFAULT_DBNAME = "postgres"


@dataclass(frozen=True)
class Connection:
    """How to reach a branch. TCP is TLS only: verify-full against the host's CA
    when Cygnet knows it (`sslrootcert`, a path on this host), else require."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    socket_dir: Path
    sslmode: str = "require"
    sslrootcert: Path | None = None

    @property
    def uri(self) -> str:
        uri = sql.connection_uri(self.host, self.port, self.user, self.password, self.dbname)
        params = {"sslmode": self.sslmode}
        if self.sslrootcert is not None:
            params["sslrootcert"] = str(self.sslrootcert)
        return f"{uri}{'&' if '?' in uri else '?'}{urlencode(params, safe='/')}"


class Clusters:
    """Runs the Postgres cluster of each branch. Postmasters outlive the daemon."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        # Postmasters (pid, start ticks) whose pid file said "ready", and when
        # (monotonic): agent/liveness.py reads it again after a second.
        self.seen_ready: dict[tuple[int, int], float] = {}

    @functools.cached_property
    def tls(self) -> ServerTls:
        """The host's certificate for Postgres, copied outside pgdata (once per daemon run)."""
        return pgtls.ensure_postgres_tls(self.config)

    @functools.cached_property
    def listen_addresses(self) -> str:
        return pgtls.listen_addresses(self.config)

    def files(self, branch: BranchRecord) -> ClusterLayout:
        return ClusterLayout(L.mountpoint(self.config.mount_root, branch.dataset))

    def pgdata(self, branch: BranchRecord) -> Path:
        return self.files(branch).pgdata

    def socket_dir(self, branch: BranchRecord) -> Path:
        return L.socket_dir(self.config.run_dir, branch.id)

    def settings(self, branch: BranchRecord, db: DatabaseRecord, *, workers: bool = True
                 ) -> ClusterSettings:
        return ClusterSettings(
            port=branch.port, listen_addresses=self.listen_addresses,
            socket_dir=self.socket_dir(branch), size=size_class(db.size_class),
            logical_workers_enabled=workers, tls=self.tls,
            major=int(db.version_of(branch).split(".")[0] or 0),
            archive=archive.archive_settings(self.config, db, branch),
            # Main of a replicated database is fenced by the host's lease (agent/lease.py).
            fence_file=(fence := lease.fence_file(self.config, self.pgdata(branch))
                        if db.main is not None and db.main.id == branch.id else None),
            failsafe_file=lease.failsafe_path(self.config, db.id) if fence else None,
        )

    def bindir(self, db: DatabaseRecord, branch: BranchRecord | None = None) -> Path:
        """The binaries of the branch's own major (an upgraded branch's), else the database's."""
        version = db.version_of(branch) if branch is not None else db.version
        return resolve_version(version, self.config.postgres_root)[1]

    def live(self, branch: BranchRecord) -> process.Postmaster | None:
        return process.find_live_postmaster(self.pgdata(branch))

    def accepting(self, branch: BranchRecord) -> bool:
        """Live and done with startup and recovery (postmaster.pid says "ready")."""
        pidfile = process.read_pidfile(self.pgdata(branch))
        return (pidfile is not None and pidfile.status == "ready"
                and self.live(branch) is not None)

    async def start(self, branch: BranchRecord, db: DatabaseRecord) -> None:
        """Starts the branch's postmaster unless one already runs; returns when ready."""
        if self.live(branch) is not None:
            return
        pgdata = self.pgdata(branch)
        self._prepare_start(pgdata, self.settings(branch, db))
        await process.start(self.bindir(db, branch), pgdata, self.files(branch).log_file)

    async def start_clone(self, branch: BranchRecord, db: DatabaseRecord,
                          subscriptions: int) -> None:
        """First start of a fresh clone: fix it up, and disarm inherited subscriptions."""
        pgdata = self.pgdata(branch)
        logfile = self.files(branch).log_file
        fixup.prepare_clone(pgdata, logfile, self.settings(branch, db, workers=subscriptions == 0))
        await process.start(self.bindir(db, branch), pgdata, logfile)
        if subscriptions:
            # Workers were off, so no subscription reached its publisher. Disable
            # them, then restart with workers on.
            await fixup.disable_subscriptions(self.socket_dir(branch), branch.port)
            await process.stop(pgdata, "fast")
            self._prepare_start(pgdata, self.settings(branch, db))
            await process.start(self.bindir(db, branch), pgdata, logfile)

    @staticmethod
    def _prepare_start(pgdata: Path, settings: ClusterSettings) -> None:
        # Nobody runs on this data dir (checked by the caller), so a pid file is
        # stale: e.g. a rollback to a snapshot taken while the cluster ran.
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        write_settings(pgdata, settings)

    def refresh(self, branch: BranchRecord, db: DatabaseRecord) -> None:
        """Rewrites an adopted postmaster's config and reloads it (SIGHUP).

        TLS files, `ssl` and pg_hba.conf apply at once, so a branch started by
        an older cygnetd stops taking clear-text TCP without a restart;
        listen_addresses waits for its next start. Errors are logged only: the
        branch keeps serving as it did.
        """
        live = self.live(branch)
        if live is None:
            return
        try:
            write_settings(self.pgdata(branch), self.settings(branch, db))
            os.kill(live.pid, signal.SIGHUP)
        except Exception as exc:
            log.error("branch %s: could not refresh its config: %s", branch.id, exc)

    async def stop(self, branch: BranchRecord, mode: str = "fast") -> None:
        # The log lets a stop that cannot write its checkpoint fall back to immediate.
        await process.stop(self.pgdata(branch), mode, log_path=self.files(branch).log_file)

    async def quiesced_stop(self, branch: BranchRecord) -> int:
        """Sessions ended, a CHECKPOINT, an immediate stop (process.quiesced_stop)."""
        return await process.quiesced_stop(self.pgdata(branch), self.socket_dir(branch),
                                           branch.port, log_path=self.files(branch).log_file)

    async def checkpoint(self, branch: BranchRecord) -> int:
        """CHECKPOINT (shortens the clone's crash recovery); returns the subscription count."""
        return await sql.checkpoint_for_snapshot(self.socket_dir(branch), branch.port)

    def write_secret(self, branch: BranchRecord, password: str = "") -> str:
        """Writes the branch's password file: `password`, or a new one if empty."""
        password = password or secrets.token_urlsafe(24)
        path = self.files(branch).secret_file
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password)
        return password

    def read_secret(self, branch: BranchRecord) -> str:
        try:
            return self.files(branch).secret_file.read_text().strip()
        except OSError:
            return ""

    async def set_password(self, branch: BranchRecord, password: str) -> None:
        await sql.set_password(self.socket_dir(branch), branch.port, ADMIN_ROLE, password)

    def connection(self, branch: BranchRecord) -> Connection:
        ca = self.tls.ca
        return Connection(self.config.advertise_host, branch.port, ADMIN_ROLE,
                          self.read_secret(branch), DEFAULT_DBNAME, self.socket_dir(branch),
                          sslmode="verify-full" if ca else "require", sslrootcert=ca)
