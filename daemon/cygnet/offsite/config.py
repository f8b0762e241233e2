"""What the off-host repository needs to know, taken from cygnetd's settings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cygnet.errors import InvalidArgument
from cygnet.offsite.crypto import Keyring

# S3's bucket naming rules (the strict, DNS-compatible ones).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HOSTS = "hosts/"  # every host writes below hosts/<host id>/ only


@dataclass(frozen=True)
class OffsiteConfig:
    endpoint: str
    bucket: str
    host: str  # this host's prefix: hosts/<host>/
    keyring: Keyring
    region: str = "us-east-1"
    # Empty: boto3's chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ...).
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)
    lock_days: int = 0  # object lock retention of each upload; 0: none
    concurrency: int = 8  # parts in flight
    part_chunks: int = 8  # encryption chunks (1 MiB) per multipart part
    retry_for: float = 30.0  # seconds one object keeps being retried before a pass gives up
    delete_pruned: bool = True  # what the repository prunes goes from the bucket too

    @property
    def prefix(self) -> str:
        return f"{HOSTS}{self.host}/"

    def check(self) -> OffsiteConfig:
        url = urlsplit(self.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidArgument("offsite_endpoint", f"{self.endpoint!r} is not an http(s) URL")
        if url.username or url.password:
            raise InvalidArgument("offsite_endpoint", "holds credentials: use "
                                  "offsite_access_key_id and offsite_secret_access_key")
        if not _BUCKET.fullmatch(self.bucket):
            raise InvalidArgument("offsite_bucket", f"{self.bucket!r} is not an S3 bucket name")
        if not _HOST.fullmatch(self.host):
            raise InvalidArgument("host_id", f"{self.host!r} cannot name a prefix in the bucket")
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise InvalidArgument("offsite_secret_access_key", "set both offsite_access_key_id "
                                  "and offsite_secret_access_key, or neither (the environment's)")
        if not 0 <= self.lock_days <= 36500:
            raise InvalidArgument("offsite_lock_days", f"{self.lock_days} is not 0-36500")
        return self
