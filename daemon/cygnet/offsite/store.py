"""The S3 client: boto3, with every failure turned into an error naming the setting.

boto3 (botocore) is the reference S3 client: SigV4 signing, multipart calls,
connection pooling and retries with backoff against any S3-compatible store,
maintained by AWS and used by pgBackRest's and WAL-G's peers in Python
(pghoard, barman-cloud). Its calls block, so the daemon runs them in threads.
Messages never carry a credential: botocore's own never hold the secret key,
and the access key id is left out too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from cygnet.errors import FailedPrecondition, Unavailable
from cygnet.offsite.config import OffsiteConfig

log = logging.getLogger("cygnet.offsite")
T = TypeVar("T")

# At DEBUG, botocore logs each request's headers and its credential lookups
# (the access key id, and the secret key with them): never below INFO here.
for _name in ("botocore", "boto3", "s3transfer", "urllib3"):
    logging.getLogger(_name).setLevel(max(logging.INFO, logging.getLogger(_name).level))

_CREDENTIALS = {"InvalidAccessKeyId": "offsite_access_key_id",
                "SignatureDoesNotMatch": "offsite_secret_access_key",
                "AccessDenied": "offsite_access_key_id", "403": "offsite_access_key_id",
                "InvalidToken": "offsite_access_key_id", "ExpiredToken": "offsite_access_key_id"}


class OffsiteRefused(FailedPrecondition):
    """The object store refused: a setting is wrong (bucket, credentials)."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"{setting}: {reason}")
        self.setting = setting


class OffsiteUnreachable(Unavailable):
    """The object store could not be reached or broke off: retrying may help."""

    setting = "offsite_endpoint"


class NoSuchObject(FailedPrecondition):
    """A key the caller expected is absent from the bucket."""


class ObjectStore:
    """One bucket of one S3-compatible store; thread-safe (boto3 clients are)."""

    def __init__(self, config: OffsiteConfig) -> None:
        self.config = config
        self.bucket = config.bucket
        credentials = {}
        if config.access_key_id:
            credentials = {"aws_access_key_id": config.access_key_id,
                           "aws_secret_access_key": config.secret_access_key}
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=config.endpoint, region_name=config.region, **credentials,
            config=Config(
                connect_timeout=5, read_timeout=60, max_pool_connections=config.concurrency + 4,
                retries={"mode": "standard", "max_attempts": 3},
                s3={"addressing_style": "path"},
                # Parts carry Content-MD5 and their ETags are compared (upload.py):
                # a second, CRC32 checksum would only cost CPU.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required"))

    def call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        """fn(Bucket=..., **kwargs), its failure mapped (what: e.g. 'upload of KEY')."""
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            raise self._refused(what, exc) from None
        except NoCredentialsError:
            raise OffsiteRefused("offsite_access_key_id", "no credentials: set "
                                 "offsite_access_key_id and offsite_secret_access_key, or "
                                 "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
        except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError,
                BotoCoreError) as exc:
            raise OffsiteUnreachable(f"offsite_endpoint: {self.config.endpoint} failed during "
                                     f"{what}: {type(exc).__name__}") from None

    def _refused(self, what: str, exc: ClientError) -> Exception:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "NoSuchBucket":
            return OffsiteRefused("offsite_bucket", f"bucket {self.bucket!r} does not exist "
                                  f"at {self.config.endpoint}")
        if code in ("NoSuchKey", "404"):
            return NoSuchObject(f"{self.bucket}/{what}: no such object in the off-host repository")
        if code in _CREDENTIALS:
            return OffsiteRefused(_CREDENTIALS[code], f"{self.config.endpoint} refused the "
                                  f"credentials during {what} ({code})")
        if status >= 500:
            return OffsiteUnreachable(f"offsite_endpoint: {self.config.endpoint} failed during "
                                      f"{what}: {code or status}")
        return OffsiteRefused("offsite_endpoint", f"{what} refused: {code or status}")

    def check(self) -> None:
        """The bucket exists and these credentials may use it. A listing, not HEAD:
        HEAD answers carry no error code, so a wrong secret and an unknown key
        would look alike."""
        self.call("check of the bucket", self.client.list_objects_v2, MaxKeys=1)

    def lock_supported(self) -> bool:
        """Whether the bucket has object lock on (it must be created with it)."""
        try:
            conf = self.call("check of object lock", self.client.get_object_lock_configuration)
        except OffsiteRefused:
            return False
        except NoSuchObject:
            return False
        return bool(conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    def lock_args(self, enabled: bool) -> dict[str, Any]:
        if not enabled or self.config.lock_days <= 0:
            return {}
        until = datetime.now(UTC) + timedelta(days=self.config.lock_days)
        return {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until}

    def list(self, prefix: str, delimiter: str = "") -> Iterator[dict[str, Any]]:
        """Objects (Key, Size) below prefix; with a delimiter, CommonPrefixes as {'Prefix'}."""
        token: dict[str, Any] = {}
        extra = {"Delimiter": delimiter} if delimiter else {}
        while True:
            page = self.call(f"listing of {prefix}", self.client.list_objects_v2,
                             Prefix=prefix, **extra, **token)
            yield from page.get("Contents", [])
            yield from page.get("CommonPrefixes", [])
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def versions(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(Key, VersionId) of every version below prefix ("null" where the bucket has
        no versioning; a versioned bucket keeps old versions after a plain DELETE)."""
        marker: dict[str, Any] = {}
        while True:
            page = self.call(f"versions of {prefix}", self.client.list_object_versions,
                             Prefix=prefix, **marker)
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                yield str(v["Key"]), str(v.get("VersionId") or "null")
            if not page.get("IsTruncated"):
                return
            marker = {"KeyMarker": page["NextKeyMarker"],
                      "VersionIdMarker": page.get("NextVersionIdMarker", "")}

    def delete_versions(self, versions: Sequence[tuple[str, str]]) -> dict[str, str]:
        """Deletes up to 1,000 (Key, VersionId) at once; returns the refused keys with
        their error codes (AccessDenied: under object lock)."""
        if not versions:
            return {}
        answer = self.call("deletion of pruned objects", self.client.delete_objects,
                           Delete={"Objects": [{"Key": k, "VersionId": v} for k, v in versions],
                                   "Quiet": True})
        return {str(e["Key"]): str(e.get("Code", "")) for e in answer.get("Errors", [])}

    def reader(self, key: str) -> tuple[Callable[[int], bytes], dict[str, str]]:
        """read(n) of the object's bytes, streamed: up to n bytes, b"" at the end; and
        the object's user metadata."""
        answer = self.call(key, self.client.get_object, Key=key)
        body = answer["Body"]

        def read(size: int) -> bytes:
            try:
                return bytes(body.read(size))
            except (BotoCoreError, OSError) as exc:
                raise OffsiteUnreachable(f"offsite_endpoint: {self.config.endpoint} broke off "
                                         f"reading {key}: {type(exc).__name__}") from None

        return read, dict(answer.get("Metadata") or {})

    def get(self, key: str, byte_range: str = "") -> bytes:
        extra = {"Range": byte_range} if byte_range else {}
        body = self.call(key, self.client.get_object, Key=key, **extra)["Body"]
        try:
            return bytes(body.read())
        except (BotoCoreError, OSError) as exc:
            raise OffsiteUnreachable(f"offsite_endpoint: {self.config.endpoint} broke off "
                                     f"reading {key}: {type(exc).__name__}") from None
