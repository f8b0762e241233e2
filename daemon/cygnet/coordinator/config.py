"""cygnet-coordinator settings: defaults, an optional TOML file, then command-line overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cygnet.errors import InvalidArgument
from cygnet.settings import load_settings

# Each field's type is checked as written (cygnet/settings.py): add a setting
# as one `name: type = default` line with a comment that says what it is for.


@dataclass(frozen=True)
class CoordinatorConfig:
    # Mutual TLS: agents and certificate clients, all with fleet CA certificates.
    listen: str = "0.0.0.0:7434"
    # TLS without client certificates, for clients with a bearer token. "" disables it.
    listen_token: str = ""
    # sqlite:///PATH (default, one coordinator) or postgresql://... (several, one leader).
    store: str = "sqlite:////var/lib/cygnet/coordinator.db"
    # The coordinator's certificate and the fleet CA (`cygnet-coordinator pki`).
    tls_cert: Path = Path("/etc/cygnet/pki/coordinator.pem")
    tls_key: Path = Path("/etc/cygnet/pki/coordinator.key")
    tls_ca: Path = Path("/etc/cygnet/pki/ca.pem")
    # Lines of "NAME TOKEN"; callers send "authorization: Bearer TOKEN".
    tokens_file: Path | None = None
    # Identity (certificate common name, token/NAME, or KIND/*) -> admin, operator or reader.
    roles: dict[str, str] = field(default_factory=dict)
    # Audit lines go to this file; None: the journal under systemd, else the log.
    audit_log: Path | None = None
    # Deny list of revoked certificate serials and identities, re-read when it changes.
    revoked: Path | None = None
    heartbeat_interval: float = 5.0
    # A host that missed this many heartbeats is unavailable.
    missed_heartbeats: int = 3
    # Share of a host's memory that its clusters' budgets may take.
    memory_fraction: float = 0.75
    # Clusters per host unless the host says otherwise.
    max_clusters: int = 200
    # A PlaceDatabase reservation not used by CreateDatabase is freed after this.
    reservation_ttl: float = 300.0
    # A leader that stops renewing its lease (dead or paused) is replaced after this long.
    lease_ttl: float = 3.0
    # A host's lease (docs/ha.md "Host leases"): its last heartbeat plus this. Its
    # replicated primaries stop writing at 2/3 of it; a replica is promoted after it.
    host_lease_ttl: float = 6.0
    # A move whose coordinator stopped renewing it this long is finished by the
    # leader (docs/ha.md "Moving databases"). Keep it above 20 s: an agent cancels
    # the MoveIn of a caller that vanished without a FIN within 20 s.
    move_orphaned_after: float = 30.0
    # Deadline of calls to agents that change something (creating takes a while).
    agent_timeout: float = 600.0
    # Prometheus /metrics on HOST:PORT (e.g. 127.0.0.1:9434). Empty disables it.
    metrics_listen: str = ""
    # How often the gauges (hosts by state) are recomputed.
    metrics_interval: float = 15.0

    @property
    def stale_after(self) -> float:
        return self.heartbeat_interval * self.missed_heartbeats

    def validate(self) -> CoordinatorConfig:
        if not self.listen and not self.listen_token:
            raise InvalidArgument("listen", "give listen, listen_token or both")
        if self.heartbeat_interval <= 0:
            raise InvalidArgument("heartbeat_interval", "must be positive")
        if self.missed_heartbeats < 1:
            raise InvalidArgument("missed_heartbeats", "must be at least 1")
        if not 0 < self.memory_fraction <= 1:
            raise InvalidArgument("memory_fraction", "must be in (0, 1]")
        if self.lease_ttl <= 0:
            raise InvalidArgument("lease_ttl", "must be positive")
        if self.host_lease_ttl <= 0:
            raise InvalidArgument("host_lease_ttl", "must be positive")
        if self.move_orphaned_after <= 0:
            raise InvalidArgument("move_orphaned_after", "must be positive")
        if self.max_clusters < 1:
            raise InvalidArgument("max_clusters", "must be at least 1")
        if self.listen_token and self.tokens_file is None:
            raise InvalidArgument("tokens_file", "listen_token needs a tokens file")
        return self


def load_config(path: Path | None, overrides: dict[str, Any]) -> CoordinatorConfig:
    """Defaults <- TOML file <- overrides (None values in overrides are ignored)."""
    return load_settings(CoordinatorConfig, path, overrides).validate()
