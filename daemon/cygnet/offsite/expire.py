"""Deleting from the bucket what the local repository pruned (docs/durability.md).

The journal (backup/pruned.py) names each object a prune removed here. After
an upload pass that left nothing pending, so that every block a remaining
manifest needs is in the bucket already, each named key goes from the host's
prefix, every version of it (a bucket with object lock is versioned, and a
plain DELETE there only adds a marker). A version still under object lock is
refused: its line stays, and is tried again a day later. A name whose file is
here again (a crash between the journal's line and the unlink) is dropped
and its remote copy kept; so is one the other lane is uploading right now.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cygnet.backup import pruned
from cygnet.offsite.store import ObjectStore

log = logging.getLogger("cygnet.offsite")

BATCH = 1000  # keys per DeleteObjects call, S3's limit
LOCKED_RETRY = 86400.0  # seconds before a version under object lock is tried again


@dataclass
class Expired:
    deleted: list[str]  # paths below the repository (keys below the host's prefix)
    locked: int = 0  # journal entries object lock keeps in the bucket for now


def follow_prunes(store: ObjectStore, repo: Path, busy: Callable[[str], bool],
                  now: float) -> Expired:
    """Deletes from the bucket the objects the journal names, and settles it."""
    todo, done = [], set()
    entries = pruned.read(repo)
    waiting = {rel for rel, when in entries if when > now}  # locked, tried again later
    for rel in dict.fromkeys(rel for rel, when in entries if when <= now):
        if (repo / rel).exists():
            done.add(rel)  # back here: the remote copy stays
        elif not busy(rel):
            todo.append(rel)
    if not todo and not done:
        return Expired([], len(waiting))
    prefix = store.config.prefix
    wanted = {prefix + rel for rel in todo}
    versions = [(k, v) for d in sorted({rel.rpartition("/")[0] for rel in todo})
                for k, v in store.versions(prefix + (d + "/" if d else "")) if k in wanted]
    refused: dict[str, str] = {}
    for i in range(0, len(versions), BATCH):
        refused.update(store.delete_versions(versions[i:i + BATCH]))
    later = {k[len(prefix):]: now + LOCKED_RETRY for k, code in refused.items()
             if code == "AccessDenied"}
    failed = {k[len(prefix):] for k in refused} - set(later)
    settled = {rel for rel in todo if rel not in later and rel not in failed}
    pruned.settle(repo, done | settled, later)
    had = {k[len(prefix):] for k, _ in versions}  # never uploaded: nothing to delete
    deleted = [rel for rel in todo if rel in settled and rel in had]
    if failed:
        log.warning("%d pruned object(s) not deleted from the bucket (%s); tried again at "
                    "the next pass", len(failed), ", ".join(sorted(set(refused.values()))))
    if later:
        log.info("%d pruned object(s) are under object lock in the bucket; tried again in "
                 "a day", len(later))
    return Expired(deleted, len(waiting | set(later)))
