"""The catalog saved at a clean stop, so that the next start need not list ZFS whole
before it serves.

On zfs-fuse a recursive listing costs about 10 ms per dataset or snapshot,
whatever properties it asks for: 20 s at 1,000 branches, which a restart
spent before it served. At a clean stop (nothing running, every write read
back) cygnetd writes what its catalog holds to STATE/catalog.json. The next
start takes the file (it is removed first, so a crash afterwards never reuses
it), checks that it was written for the same pools (by the guid of each
pool's POOL/cygnet, so a pool made again is not taken for the old one),
properties and cygnetd version, and starts from it. The supervisor then reads ZFS whole at once in
the background, as its resync does every minute, so a change made by hand
while cygnetd was stopped is seen within that read. Without a usable file
(a crash, a kill, another version) the start reads ZFS as before.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cygnet import __version__
from cygnet.zfs import Dataset

log = logging.getLogger("cygnet.agent")

FORMAT = 1
Groups = dict[str, dict[str, Dataset]]


def _identity(pools: Mapping[str, str], props: Sequence[str]) -> dict[str, Any]:
    return {"format": FORMAT, "version": __version__, "pools": dict(pools),
            "props": list(props)}


def save(path: Path, groups: Groups, pools: Mapping[str, str], props: Sequence[str]) -> bool:
    """Writes the catalog (atomically, owner-only): after a clean stop only. Not
    when a pool's root guid is unknown ("")."""
    if not all(pools.values()):
        return False
    body = _identity(pools, props) | {"groups": {
        group: {name: [ds.native, ds.user] for name, ds in datasets.items()}
        for group, datasets in groups.items()}}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return True


def take(path: Path, pools: Mapping[str, str], props: Sequence[str]) -> Groups | None:
    """The saved catalog, if there is one for these pools (name: root guid) and
    properties; the file is removed either way, so that it serves one start only."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    finally:
        path.unlink(missing_ok=True)
    if not all(pools.values()):
        return None
    try:
        body = json.loads(raw)
        if {k: body.get(k) for k in ("format", "version", "pools", "props")} != _identity(
                pools, props):
            log.info("the saved catalog is for another cygnetd or other pools: reading ZFS")
            return None
        return {group: {name: Dataset(name, dict(native), dict(user))
                        for name, (native, user) in datasets.items()}
                for group, datasets in body["groups"].items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("the saved catalog is unreadable (%s): reading ZFS", exc)
        return None
