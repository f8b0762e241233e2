"""Revoked client certificates: a deny list re-read whenever its file changes.

The file holds one entry a line ('#' starts a comment): a certificate serial in
hex (as `openssl x509 -serial` prints it, with or without 0x and colons), or an
identity such as client/alice, which revokes every certificate of that name.
A TLS handshake cannot consult it, so the check runs on every call instead
(rpc/auth.py): a revoked certificate gets UNAUTHENTICATED.
"""

from __future__ import annotations

import logging
import os
import string
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from cryptography import x509

from cygnet.errors import InvalidArgument

log = logging.getLogger("cygnet.auth")


@dataclass(frozen=True)
class Entries:
    serials: frozenset[int] = frozenset()
    identities: frozenset[str] = frozenset()


def parse(text: str, origin: str) -> Entries:
    serials: set[int] = set()
    identities: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "/" in line:
            identities.add(line)
            continue
        digits = line.lower().removeprefix("serial=").removeprefix("0x").replace(":", "")
        if not digits or any(c not in string.hexdigits for c in digits):
            raise InvalidArgument("revoked", f"{origin} line {number}: {line!r} is neither "
                                  "a hex serial nor an identity")
        serials.add(int(digits, 16))
    return Entries(frozenset(serials), frozenset(identities))


@lru_cache(maxsize=256)
def serial_of(pem: bytes) -> int | None:
    try:
        return x509.load_pem_x509_certificate(pem).serial_number
    except ValueError:
        return None


@dataclass
class DenyList:
    """The deny list at `path` (None: nothing is revoked), re-read when its mtime changes."""

    path: Path | None
    _entries: Entries = field(default_factory=Entries)
    _stamp: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            self._reload(strict=True)

    def _reload(self, strict: bool) -> None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_ino)
            if stamp == self._stamp:
                return
            entries = parse(self.path.read_text(), str(self.path))
        except (OSError, InvalidArgument) as exc:
            if strict:
                raise InvalidArgument("revoked", f"{self.path}: {exc}") from exc
            # Keep the last good list: a half-written file must not unrevoke anyone.
            log.error("deny list %s not reloaded, keeping the previous one: %s", self.path, exc)
            return
        if self._stamp is not None:
            log.warning("deny list %s reloaded: %d serials, %d identities", self.path,
                        len(entries.serials), len(entries.identities))
        self._entries, self._stamp = entries, stamp

    def refusal(self, identity: str, pem: bytes | None) -> str | None:
        """Why this certificate is revoked, or None if it is not."""
        if self.path is None:
            return None
        self._reload(strict=False)
        if identity in self._entries.identities:
            return f"identity {identity} is on the deny list"
        serial = serial_of(pem) if pem else None
        if serial is not None and serial in self._entries.serials:
            return f"certificate serial {serial:x} is on the deny list"
        return None
