"""ZFS errors as users understand them: databases, branches and snapshots, never datasets.

The error interceptor calls `Translator` on every failure of the daemon's
API. An expected ZFS error (gone, exists, busy, has dependents, full, timed
out) becomes the domain error of the object it is about, named as users know
it; the internal dataset name goes to the log only. Any other ZFS error stays
as it is, which the interceptor answers with INTERNAL.
"""

from __future__ import annotations

import logging
import re

from cygnet import errors
from cygnet.agent.host import Host
from cygnet.zfs import errors as zfs

log = logging.getLogger("cygnet.agent")

# POOL/cygnet/db/DBID[/BRANCHID[-GEN]][@SNAPID], anywhere in an argv or a message.
_DATASET = re.compile(
    r"(?P<pool>[A-Za-z0-9_.:-]+)/cygnet/db/(?P<db>db[a-z0-9]{10})"
    r"(?:/(?P<br>br[a-z0-9]{10})(?:-[0-9a-f]+)?)?(?:@(?P<sn>[a-z]{2}[a-z0-9]{10}))?")

_TEMPLATE = re.compile(r"(?P<pool>[A-Za-z0-9_.:-]+)/cygnet/templates/pg(?P<version>[0-9]+)")


class Translator:
    def __init__(self, host: Host) -> None:
        self.host = host

    def __call__(self, exc: Exception) -> Exception:
        if not isinstance(exc, zfs.ZfsError):
            return exc
        what, pool = self.describe(exc)
        translated = self._domain(exc, what, pool)
        if translated is not exc:
            log.info("%s: %s (%s)", type(exc).__name__, exc, " ".join(exc.argv))
        return translated

    def _domain(self, exc: zfs.ZfsError, what: str, pool: str) -> Exception:
        if isinstance(exc, zfs.OutOfSpace):
            return errors.ResourceExhausted(f"pool {pool or 'of ' + what} is full")
        if isinstance(exc, zfs.DatasetNotFound):
            return errors.NotFound(f"{what} no longer exists")
        if isinstance(exc, zfs.DatasetExists):
            return errors.AlreadyExists(f"{what} already exists")
        if isinstance(exc, zfs.HasDependents):
            return errors.FailedPrecondition(f"{what} has dependent branches or snapshots")
        if isinstance(exc, zfs.DatasetBusy):
            return errors.Aborted(f"{what} is busy; try again")
        if isinstance(exc, zfs.ZfsTimeout):
            return errors.Aborted(f"ZFS did not finish in time on {what}; it may have "
                                  "completed: look before trying again")
        return exc

    def describe(self, exc: zfs.ZfsError) -> tuple[str, str]:
        """The object an error is about, as users name it, and its pool."""
        match = None
        for text in (*reversed(exc.argv), str(exc), exc.stderr):
            match = _DATASET.search(text)
            if match:
                break
        if match is None:
            template = next((m for t in (*exc.argv, str(exc)) if (m := _TEMPLATE.search(t))),
                            None)
            if template is not None:
                return f"the PostgreSQL {template['version']} template", template["pool"]
            return "the object", ""
        db = self.host.known.get(match["db"])
        db_name = db.name if db is not None else match["db"]
        what = f"database {db_name!r}"
        if match["br"]:
            branch = db.branches.get(match["br"]) if db is not None else None
            what = f"branch {db_name}/{branch.name if branch else match['br']}"
        if match["sn"]:
            snap = match["sn"]
            return f"snapshot {snap} of {what}", match["pool"]
        return what, match["pool"]
