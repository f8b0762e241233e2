"""Where a cluster's files live on its dataset, and the OS user that owns them."""

from __future__ import annotations

import functools
import pwd
from dataclasses import dataclass
from pathlib import Path

POSTGRES_OS_USER = "postgres"
# The database superuser role; peer auth maps OS users root and postgres to it.
SUPERUSER_ROLE = "postgres"
PGDATA = "pgdata"  # the data directory's name below a cluster's mount
# sun_path is 108 bytes; the socket file name adds "/.s.PGSQL.NNNNN".
MAX_SOCKET_DIR_LEN = 107 - len("/.s.PGSQL.65535")


@dataclass(frozen=True)
class ClusterLayout:
    """The fixed layout under a dataset mountpoint `mount`.

    pgdata:  mount/pgdata (0700, owned postgres)
    log_file: mount/log/postgres.log (owned postgres), the postmaster's stderr
    secret_file: mount/secret (0600, root), the role password; written by the agent
    """

    mount: Path

    @property
    def pgdata(self) -> Path:
        return self.mount / PGDATA

    @property
    def log_dir(self) -> Path:
        return self.mount / "log"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "postgres.log"

    @property
    def secret_file(self) -> Path:
        return self.mount / "secret"


@dataclass(frozen=True)
class OsUser:
    """Numeric ids and home of an OS user."""

    name: str
    uid: int
    gid: int
    home: str


@functools.cache
def postgres_user() -> OsUser:
    """The `postgres` OS user; postgres refuses to run as root, so it runs as this."""
    entry = pwd.getpwnam(POSTGRES_OS_USER)
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
