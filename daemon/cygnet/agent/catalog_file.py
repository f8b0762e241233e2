"""The catalog kept on disk, so that a start need not list ZFS whole before it
serves: after a clean stop, and after a crash or a kill -9 too.

On zfs-fuse a recursive listing costs about 10 ms per dataset or snapshot,
whatever properties it asks for: 20 s at 1,000 branches, which a start spent
before it served. So cygnetd keeps two files in STATE:

- `catalog.json`: what the catalog held at a quiet moment (no ZFS write under
  way, every write read back), with a generation (a random token). cygnetd
  writes it about once a second while its catalog changes, and at a clean stop.
- `catalog.journal`: the names cygnetd is about to write, each appended before
  its ZFS write starts, under the same generation. Each save starts the journal
  afresh.

A start takes the file if its generation, pools (each one's POOL/cygnet guid,
so a pool made again is not taken for the old one), properties, cygnetd
version and boot are this start's, and re-reads every name the journal holds
(a write that the dead daemon started, finished or not) before it serves. The
supervisor then reads ZFS whole at once in the background, as its resync does
every minute, so a change made by hand meanwhile is seen within that read.

The journal is not flushed to the disk: a process that dies leaves what it
wrote in the page cache, and a host that reboots has another boot id, so its
start reads ZFS whole. Except after a clean stop: its save is flushed (file,
journal and directory) and marked `stopped`, and nothing was written after it,
so a start after the reboot takes it too. It then removes the file, so that a
kill before the first save of the new boot cannot leave a stopped catalog
whose journal lost lines. Without a usable pair the start reads ZFS whole.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cygnet import __version__
from cygnet.agent import lease
from cygnet.backup.fsutil import fsync_dir
from cygnet.zfs import Dataset

log = logging.getLogger("cygnet.agent")

FORMAT = 2
Groups = dict[str, dict[str, Dataset]]


def _identity(pools: Mapping[str, str], props: Sequence[str]) -> dict[str, Any]:
    return {"format": FORMAT, "version": __version__, "pools": dict(pools),
            "props": list(props), "boot": lease.boot_id()}


@dataclass
class Saved:
    """A catalog taken at start: its datasets, and the names written since it was
    saved, each with whether everything below it is to be read again."""

    groups: Groups
    generation: str
    intents: dict[str, bool]
    other_boot: bool = False  # saved at a clean stop before a reboot


class Journal:
    """`catalog.journal`: one line per ZFS write, appended before it starts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generation = ""
        self._fd: int | None = None

    def begin(self, generation: str, *, keep: bool = False, sync: bool = False) -> None:
        """Writes go under `generation` from now on: kept (a start that took the
        saved catalog goes on where the dead daemon stopped) or started afresh."""
        self.close()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if keep else os.O_TRUNC)
        self._fd = os.open(self.path, flags, 0o600)
        self.generation = generation
        if not keep:
            os.write(self._fd, f"G {generation}\n".encode())
        if sync:
            os.fsync(self._fd)

    def intend(self, name: str, tree: bool) -> None:
        if self._fd is not None:  # one write(2) per line: whole lines in O_APPEND
            os.write(self._fd, f"{'T' if tree else 'N'} {name}\n".encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def read(path: Path, generation: str) -> dict[str, bool] | None:
        """The names in the journal of `generation` (None: another one, or none)."""
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        if not lines or lines[0] != f"G {generation}":
            return None
        intents: dict[str, bool] = {}
        for line in lines[1:]:
            kind, _, name = line.partition(" ")
            if kind not in ("T", "N") or not name:
                return None  # not a line this module wrote
            intents[name] = intents.get(name, False) or kind == "T"
        return intents


@dataclass
class Writer:
    """Saves the catalog; a dataset's JSON is kept while its object is unchanged
    (a read replaces the object), so a save at 1,000 branches encodes only what
    changed since the last one."""

    path: Path
    journal: Journal
    _encoded: dict[str, tuple[Dataset, str]] = field(default_factory=dict)

    def save(self, groups: Groups, pools: Mapping[str, str], props: Sequence[str], *,
             stopped: bool = False) -> bool:
        """Writes the catalog under a new generation and starts the journal afresh
        for it. Only at a quiet moment (no write under way, every write read back),
        and all in one step: no write may start in between. Not when a pool's root
        guid is unknown (""). `stopped`: the last save before a clean stop, flushed
        to the disk, which a start after a reboot may take."""
        if not all(pools.values()):
            return False
        generation = secrets.token_hex(8)
        head = json.dumps(_identity(pools, props) | {"generation": generation,
                                                     "stopped": stopped},
                          separators=(",", ":"))
        kept: dict[str, tuple[Dataset, str]] = {}
        parts = []
        for group, datasets in groups.items():
            members = []
            for name, ds in datasets.items():
                old = self._encoded.get(name)
                text = old[1] if old is not None and old[0] is ds else json.dumps(
                    [name, ds.native, ds.user], separators=(",", ":"))
                kept[name] = (ds, text)
                members.append(text)
            parts.append(f"[{json.dumps(group)},[{','.join(members)}]]")
        self._encoded = kept
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f'{head[:-1]},"groups":[{",".join(parts)}]}}')
            if stopped:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.journal.begin(generation, sync=stopped)
        if stopped:
            fsync_dir(self.path.parent)
        return True


def take(path: Path, journal: Path, pools: Mapping[str, str],
         props: Sequence[str]) -> Saved | None:
    """The saved catalog and what was written since, if they are for these pools
    (name: root guid), properties, cygnetd version and boot. Both files are
    removed when they cannot serve."""
    saved = _read(path, journal, pools, props)
    if saved is None:
        path.unlink(missing_ok=True)
        journal.unlink(missing_ok=True)
    elif saved.other_boot:  # its journal goes on unsynced: never taken after a boot again
        path.unlink(missing_ok=True)
    return saved


def _read(path: Path, journal: Path, pools: Mapping[str, str],
          props: Sequence[str]) -> Saved | None:
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    if not all(pools.values()):
        return None
    try:
        body = json.loads(raw)
        ours = _identity(pools, props)
        if {k: body.get(k) for k in ("format", "version", "pools", "props")} != (
                {k: v for k, v in ours.items() if k != "boot"}):
            log.info("the saved catalog is for another cygnetd or pools: reading ZFS")
            return None
        other_boot = body.get("boot") != ours["boot"]
        if other_boot and body.get("stopped") is not True:
            log.info("the saved catalog is from before a reboot, without a clean stop: "
                     "reading ZFS")
            return None
        generation = str(body["generation"])
        groups = {group: {name: Dataset(name, dict(native), dict(user))
                          for name, native, user in members}
                  for group, members in body["groups"]}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("the saved catalog is unreadable (%s): reading ZFS", exc)
        return None
    intents = Journal.read(journal, generation)
    if intents is None or (other_boot and intents):
        log.info("the catalog's journal is not the saved catalog's: reading ZFS")
        return None
    if other_boot:
        log.info("taking the catalog saved at the clean stop before this boot")
    return Saved(groups, generation, intents, other_boot)
