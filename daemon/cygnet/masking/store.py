"""Where a database's masking rules and secrets live: STATE_DIR/masking/DBID/.

    rules.toml        the rules as given (0600)
    key               the HMAC key of the `hash` mask and the fakes (32 random bytes, 0600)
    password          the masked branches' password (0600)

Stored like a branch's password file: root-only files, never logged, never
inside a branch's data directory. Losing `key` changes every hash and fake of
the masked snapshots built after it.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path


class MaskingStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "masking"

    def _dir(self, database_id: str) -> Path:
        path = self.root / database_id
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def rules(self, database_id: str) -> str:
        path = self.root / database_id / "rules.toml"
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def set_rules(self, database_id: str, text: str) -> None:
        self._write(self._dir(database_id) / "rules.toml", text.encode())

    def _secret(self, database_id: str, name: str, make: bytes) -> bytes:
        path = self._dir(database_id) / name
        if not path.exists():
            self._write(path, make)
        return path.read_bytes()

    def key(self, database_id: str) -> bytes:
        return self._secret(database_id, "key", secrets.token_bytes(32))

    def password(self, database_id: str) -> str:
        return self._secret(database_id, "password",
                            secrets.token_urlsafe(24).encode()).decode()

    def forget(self, database_id: str) -> None:
        shutil.rmtree(self.root / database_id, ignore_errors=True)
