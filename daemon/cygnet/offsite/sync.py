"""Mirroring the local repository's immutable objects to the host's prefix.

What is mirrored: the repository's format file, committed packs (a pack, then
its .idx: a remote .idx commits a remote pack, as locally), archived WAL, and
manifests last, so a manifest in the bucket implies every block it needs is
there too. The scan lists manifests before packs for the same reason: a
backup commits its packs before its manifest.

The uploader never deletes or changes a repository object here (it keeps
only the prune journal's marker, backup/pruned.py): a failed pass leaves
everything where it was and the next pass tries again. In the bucket it
deletes only what the repository's journal says a prune removed, after a
pass that left nothing pending (expire.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from cygnet.backup import pruned
from cygnet.backup.errors import CorruptRepository
from cygnet.backup.manifest import read_header
from cygnet.backup.repo import Repository
from cygnet.offsite import expire
from cygnet.offsite.crypto import ciphertext_size
from cygnet.offsite.store import ObjectStore, OffsiteRefused, OffsiteUnreachable
from cygnet.offsite.upload import put_file

log = logging.getLogger("cygnet.offsite")

# Directories of the repository whose every file is immutable once it has its
# final name (archived WAL: keyed by branch id and archive generation).
IMMUTABLE_DIRS = ("wal",)
WAL_PHASE = 3  # archived WAL: after packs, before the manifests of live backups
MANIFESTS = 4  # the phase of manifests: after everything they refer to
RELIST = 3600.0  # seconds between listings of the host's prefix
_SKIP_SUFFIXES = (".tmp", ".partial", ".lock")


@dataclass(frozen=True)
class LocalObject:
    rel: str  # path in the repository, '/'-separated: the key below the host's prefix
    size: int
    mtime: float
    phase: int  # objects of a lower phase go first


def scan(repo: Path) -> list[LocalObject]:
    """Every immutable object of the repository, in upload order."""
    found: list[LocalObject] = []
    found += _files(repo, repo / "backups", "*.manifest", MANIFESTS)
    for top in IMMUTABLE_DIRS:
        found += _files(repo, repo / top, "**/*", WAL_PHASE)
    packs = _files(repo, repo / "packs", "*.pack", 1)
    idx = {o.rel[:-4] for o in _files(repo, repo / "packs", "*.idx", 2)}
    # Only committed packs: a .pack without its .idx may still be written.
    found += [p for p in packs if p.rel[:-5] in idx]
    found += _files(repo, repo / "packs", "*.idx", 2)
    found += _files(repo, repo, "cygnet-backup.json", 0)
    return sorted(found, key=lambda o: (o.phase, o.rel))


def _files(repo: Path, where: Path, pattern: str, phase: int) -> Iterable[LocalObject]:
    if not where.is_dir():
        return []
    out = []
    for path in where.glob(pattern):
        if path.name.startswith(".") or path.name.endswith(_SKIP_SUFFIXES):
            continue
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if path.is_file() and not path.is_symlink():
            out.append(LocalObject(path.relative_to(repo).as_posix(), st.st_size, st.st_mtime,
                                   phase))
    return out


def upload_order(repo: Path, pending: list[LocalObject]) -> list[LocalObject]:
    """Delta manifests after full ones: a delta in the bucket then always finds its
    base there (prune may rewrite a manifest as a delta of another base)."""
    out = []
    for obj in pending:
        if obj.phase == MANIFESTS:
            try:
                _, base = read_header(Repository(repo), Path(obj.rel).stem)
            except (CorruptRepository, OSError):
                base = None  # uploaded as it is; a restore reports what is wrong with it
            if base is not None:
                obj = replace(obj, phase=MANIFESTS + 1)
        out.append(obj)
    return sorted(out, key=lambda o: (o.phase, o.rel))


@dataclass
class Status:
    """What the metrics and `cygnet backup list --remote` report."""

    pending_bytes: int = 0
    pending_objects: int = 0
    oldest_pending_s: float = 0.0  # age of the oldest local object not yet off-host
    uploaded_bytes: int = 0
    uploaded_objects: int = 0
    failed_passes: int = 0
    last_error: str = ""
    last_success: float = 0.0  # time.time() of the last pass that left nothing pending
    lock: bool = False
    deleted_objects: int = 0  # pruned here, then deleted from the bucket (expire.py)
    locked_objects: int = 0  # pruned here, still under object lock in the bucket


@dataclass
class Uploader:
    store: ObjectStore
    repo: Path
    status: Status = field(default_factory=Status)
    _remote: dict[str, int] | None = None  # rel -> stored size, listed once, then kept
    _guard: threading.Lock = field(default_factory=threading.Lock)  # one pass at a time
    _counting: threading.Lock = field(default_factory=threading.Lock)
    _sent: dict[str, float] = field(default_factory=dict)  # rel -> its mtime when uploaded
    _cancelled: threading.Event = field(default_factory=threading.Event)
    _listed: float = 0.0
    # Archived WAL has a lane of its own, so that a long pass (a large backup's
    # packs) never holds it back: the RPO is the WAL's time to the bucket.
    _wal_guard: threading.Lock = field(default_factory=threading.Lock)
    _inflight: dict[str, threading.Event] = field(default_factory=dict)  # rel -> done

    def cancel(self) -> None:
        """Ends a pass early (the daemon is stopping): objects not yet started are left
        for the next start, retries stop waiting; an upload in flight finishes."""
        self._cancelled.set()

    def start(self) -> None:
        """Checks the bucket and credentials, and whether object lock can be used."""
        self.store.check()
        self.status.lock = self.store.config.lock_days > 0 and self.store.lock_supported()
        if self.store.config.lock_days > 0 and not self.status.lock:
            log.warning("offsite_lock_days = %d, but bucket %s has no object lock: objects "
                        "are uploaded without retention", self.store.config.lock_days,
                        self.store.bucket)

    def remote(self) -> dict[str, int]:
        """What the host's prefix holds, listed at the first pass and again every
        RELIST seconds: an object that left the bucket (a lifecycle rule, an
        operator) while its local copy is still there goes up again."""
        if self._remote is None or time.monotonic() - self._listed > RELIST:
            prefix = self.store.config.prefix
            self._remote = {o["Key"][len(prefix):]: int(o["Size"])
                            for o in self.store.list(prefix) if "Key" in o}
            self._listed = time.monotonic()
        return self._remote

    def is_offsite(self, obj: LocalObject) -> bool:
        stored = self.remote().get(obj.rel)
        keys = self.store.config.keyring.keys
        if self._sent.get(obj.rel, obj.mtime) != obj.mtime:
            return False  # rewritten since it went up (prune re-encodes manifests)
        return stored is not None and stored in {ciphertext_size(obj.size, k) for k in keys}

    def pending(self) -> list[LocalObject]:
        return [o for o in scan(self.repo) if not self.is_offsite(o)]

    def run_pass(self) -> int:
        """Uploads what is pending; returns the bytes uploaded. Raises the first failure
        (after the objects already in flight finish), leaving the rest for the next pass."""
        with self._guard:
            pruned.follow(self.repo, self.store.config.delete_pruned)
            try:
                pending = upload_order(self.repo, self.pending())
                self._measure(pending)
                sent = self._upload(pending)
                self._measure(self.pending())
                if not self.status.pending_objects:
                    self.status.last_success = time.time()
                    self._follow_prunes()
            except (OffsiteRefused, OffsiteUnreachable) as exc:
                self.status.failed_passes += 1
                self.status.last_error = str(exc)
                raise
            self.status.last_error = ""
            return sent

    def _follow_prunes(self) -> None:
        """Once everything is up (every block a remaining manifest needs is in the
        bucket), what the repository pruned goes from the bucket too."""
        if not self.store.config.delete_pruned:
            return
        with self._counting:
            busy = set(self._inflight)
        done = expire.follow_prunes(self.store, self.repo, busy.__contains__, time.time())
        with self._counting:
            for rel in done.deleted:
                self.remote().pop(rel, None)
                self._sent.pop(rel, None)
        self.status.deleted_objects += len(done.deleted)
        self.status.locked_objects = done.locked

    def run_wal_pass(self) -> int:
        """Uploads pending archived WAL only, beside any running pass; returns the bytes.
        Raises the first failure, leaving the rest for the next pass."""
        with self._wal_guard:
            wal = [o for o in _files(self.repo, self.repo / "wal", "**/*", WAL_PHASE)
                   if not self.is_offsite(o)]
            if not wal:
                return 0
            try:
                return self._upload(wal)
            except (OffsiteRefused, OffsiteUnreachable) as exc:
                self.status.last_error = str(exc)
                raise

    def _measure(self, pending: list[LocalObject]) -> None:
        now = time.time()
        self.status.pending_objects = len(pending)
        self.status.pending_bytes = sum(o.size for o in pending)
        self.status.oldest_pending_s = max((now - o.mtime for o in pending), default=0.0)

    def _upload(self, pending: list[LocalObject]) -> int:
        sent = 0
        config = self.store.config
        with ThreadPoolExecutor(config.concurrency, thread_name_prefix="offsite-obj") as objs, \
                ThreadPoolExecutor(config.concurrency, thread_name_prefix="offsite-part") as parts:
            for phase in sorted({o.phase for o in pending}):
                batch = [o for o in pending if o.phase == phase]
                futures = [objs.submit(self._one, o, parts) for o in batch]
                errors = []
                for f in futures:
                    try:
                        sent += f.result()
                    except (OffsiteRefused, OffsiteUnreachable) as exc:
                        errors.append(exc)
                if errors:  # later phases depend on this one: stop here
                    raise errors[0]
        return sent

    def _one(self, obj: LocalObject, parts: ThreadPoolExecutor) -> int:
        """Uploads `obj` unless the other lane is uploading it; then waits for that
        upload, and makes its own if that one failed (a later phase relies on it)."""
        while True:
            with self._counting:
                busy = self._inflight.get(obj.rel)
                if busy is None:
                    done = self._inflight[obj.rel] = threading.Event()
            if busy is None:
                break
            busy.wait()
            if self.is_offsite(obj) or self._cancelled.is_set():
                return 0
        try:
            return self._put(obj, parts)
        finally:
            with self._counting:
                del self._inflight[obj.rel]
            done.set()

    def _put(self, obj: LocalObject, parts: ThreadPoolExecutor) -> int:
        config = self.store.config
        key = config.prefix + obj.rel
        deadline = time.monotonic() + config.retry_for
        delay = 0.5
        while True:
            if self._cancelled.is_set():
                return 0
            try:
                done = put_file(self.store, config.keyring, str(self.repo / obj.rel), key,
                                parts, lock=self.status.lock)
                break
            except FileNotFoundError:
                return 0  # pruned meanwhile: nothing left to mirror
            except OffsiteUnreachable as exc:
                # The store went away or broke off: the whole object again, with backoff.
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("upload of %s failed, retrying in %.1f s: %s", key, delay, exc)
                self._cancelled.wait(delay)
                delay = min(delay * 2, 8.0)
        with self._counting:  # objects finish in several threads at once
            self.remote()[obj.rel] = done.stored_bytes
            self._sent[obj.rel] = obj.mtime
            self.status.uploaded_bytes += done.plain_bytes
            self.status.uploaded_objects += 1
        return done.plain_bytes
