"""A real S3-compatible store for tests: SeaweedFS's `weed mini` on loopback.

Every port weed opens is chosen here (free ones, below the ephemeral range
where possible), so parallel runs never collide; credentials are checked
(an S3 identity file), and the bucket is made with object lock. Never a mock.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import VENV_BIN, WORK, free_ports

WEED = VENV_BIN / "weed"
# The ports of `weed mini`'s parts: HTTP and gRPC of each (their defaults collide
# between runs: 8333, 9333, 8888, ...).
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
              "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
              "admin.port", "admin.port.grpc")


@dataclass
class Seaweed:
    base: Path
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    bucket: str = field(default_factory=lambda: "cygnet-" + secrets.token_hex(4))
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def argv(self) -> list[str]:
        flags = [f"-{name}={port}" for name, port in self.ports.items()]
        return [str(WEED), "mini", f"-dir={self.base / 'data'}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", *flags, "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
                "-s3.autoCreateBucket=false", f"-s3.config={self.base / 's3.json'}"]

    def start(self, timeout: float = 60.0) -> None:
        (self.base / "data").mkdir(parents=True, exist_ok=True)
        if not self.ports:
            self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        identity = {"name": "cygnet", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}]}
        path = self.base / "s3.json"
        path.write_text(json.dumps({"identities": [identity]}))
        path.chmod(0o600)
        log = open(self.base / "weed.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, cwd=self.base,
                                     start_new_session=True)
        log.close()
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited {self.proc.returncode}: {self.tail()}")
            try:
                self.client().list_buckets()
                return
            except Exception:
                time.sleep(0.2)
        raise RuntimeError(f"weed did not serve S3 within {timeout}s: {self.tail()}")

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "weed.log").read_text()[-3000:]
        return ""

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGKILL: a graceful stop takes seconds, and the data is thrown away."""
        self.kill9()

    def client(self, **overrides: Any) -> Any:
        import boto3
        from botocore.config import Config

        args = {"endpoint_url": self.endpoint, "aws_access_key_id": self.access_key,
                "aws_secret_access_key": self.secret_key, **overrides}
        return boto3.client("s3", region_name="us-east-1", **args,
                            config=Config(retries={"max_attempts": 2}, connect_timeout=2,
                                          s3={"addressing_style": "path"}))

    def make_bucket(self, name: str | None = None, lock: bool = True) -> str:
        name = name or self.bucket
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
        return name

    def objects(self, bucket: str | None = None) -> dict[str, bytes]:
        """Every object's bytes (latest versions)."""
        c = self.client()
        b = bucket or self.bucket
        keys = [o["Key"] for page in c.get_paginator("list_objects_v2").paginate(Bucket=b)
                for o in page.get("Contents", [])]
        return {k: c.get_object(Bucket=b, Key=k)["Body"].read() for k in keys}

    def settings(self, key_id: str = "k1", key: bytes | None = None, bucket: str | None = None,
                 **extra: object) -> str:
        """cygnetd TOML for this store (credentials in the settings file)."""
        key = key or KEY
        lines = [f'offsite_endpoint = "{self.endpoint}"',
                 f'offsite_bucket = "{bucket or self.bucket}"',
                 f'offsite_access_key_id = "{self.access_key}"',
                 f'offsite_secret_access_key = "{self.secret_key}"',
                 f'offsite_key_id = "{key_id}"',
                 *(f"{k} = {json.dumps(v)}" for k, v in extra.items()),
                 "[offsite_keys]", f'{key_id} = "{base64.b64encode(key).decode()}"']
        return "\n".join(lines) + "\n"


KEY = bytes(range(32))


@contextlib.contextmanager
def seaweed(prefix: str = "s3-") -> Iterator[Seaweed]:
    store = Seaweed(WORK / (prefix + secrets.token_hex(3)))
    try:
        store.start()
        store.make_bucket()
        yield store
    finally:
        store.stop()
        import shutil

        shutil.rmtree(store.base, ignore_errors=True)
