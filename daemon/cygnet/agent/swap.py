"""One primitive: new data under an existing branch's identity.

Reset to the parent, promote, restore-in-place and the upgrade of main all
end the same way: a complete dataset (the *replacement*, in the same
database) takes over a branch's id, name, port, password and desired state,
and the data it replaces is kept as a branch of its own
(`<name>_before_<time>`) or destroyed. Connection strings do not change.

No rename is involved (zfs-fuse reports fresh mounts busy on rename), so a
branch's dataset name need not contain its id. Two properties, each one
`zfs set`, make it crash-safe:

1. `cygnet:replaces=OLD` on the replacement commits the swap. Before it,
   nothing changed and the branch keeps its data; after it, every step
   rolls forward. The inventory shows OLD as the branch while it exists
   and has no `replaced-by` (agent/inventory.py).
2. The identity is copied onto the replacement (several writes, unseen while
   it is hidden), then `cygnet:replaced-by=NEW` on OLD moves it there at once.

Then: the replacement is promoted if it was a clone of OLD (so OLD can go),
OLD gets a name of its own or is destroyed, the database's major follows
main's data, `cygnet:parent` follows each branch's ZFS origin (a `zfs
promote` moves snapshots and with them their clones' parents), and the
branch starts on its own port. The reconciler runs `recover` for every
swap a crash cut short.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable

from cygnet.agent import layout as L
from cygnet.agent.branches import drop_branch_point
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, Inventory, branch_props
from cygnet.names import MAX_NAME_LENGTH
from cygnet.states import Desired
from cygnet.zfs import Dataset, DatasetNotFound, HasDependents

log = logging.getLogger("cygnet.agent")

# Starts the branch on its new data: a plain start, or a fresh clone's fix-up.
Starter = Callable[[BranchRecord, DatabaseRecord], Awaitable[None]]
# Crash tests: cygnetd exits at once (as a kill -9 would stop it) at the step
# this environment variable names (committed, promoted, moved, started).
CRASH_AT_ENV = "CYGNET_TEST_SWAP_CRASH_AT"

# What a swap does not move: the data's own major, the lifecycle step, the swap's
# own markers, and what only databases or snapshots carry. Everything else in
# USER_PROPS (id, name, port, expiry, protection...) is the branch's identity.
_NOT_IDENTITY = frozenset({L.P_KIND, L.P_VERSION, L.P_PHASE, L.P_SIZE, L.P_SNAP_KIND, L.P_SUBS,
                           L.P_REPLACES, L.P_REPLACED_BY, L.P_SWAP_KEEP})


def identity(branch: BranchRecord) -> dict[str, str]:
    """The branch's identity properties, "" for those it has not set (to be cleared)."""
    props = branch_props(branch)
    return {k: props.get(k, "") for k in L.USER_PROPS if k not in _NOT_IDENTITY}


def kept_name(name: str, taken: set[str], now: float | None = None) -> str:
    """`<name>_before_<UTC time>`, within the name length limit and not in `taken`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    base = f"{name[:MAX_NAME_LENGTH - len(stamp) - 10]}_before_{stamp}"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _step(name: str) -> None:
    if os.environ.get(CRASH_AT_ENV) == name:
        log.critical("exiting at swap step %r (%s)", name, CRASH_AT_ENV)
        logging.shutdown()
        os._exit(137)


async def swap(host: Host, db: DatabaseRecord, branch: BranchRecord, replacement: str, *,
               keep_as: str = "", start: Starter | None = None) -> BranchRecord | None:
    """Puts `replacement` (a complete, stopped dataset of `db`) under `branch`'s
    identity; returns the branch the replaced data became, if `keep_as` names one.

    Must run under the database's lock with `db` freshly loaded. The branch is
    stopped first; a failure before the commit leaves it as it was.
    """
    if keep_as:
        await host.zfs.set_props(replacement, {L.P_SWAP_KEEP: keep_as})
    await host.zfs.set_props(branch.dataset, {L.P_PHASE: L.PHASE_RESETTING})
    branch.phase = L.PHASE_RESETTING
    try:
        await host.clusters.stop(branch, "fast")
        await host.zfs.set_props(replacement, {L.P_REPLACES: branch.dataset})
    except BaseException:
        await _abandon(host, db, branch, replacement)
        raise
    _step("committed")
    return await finish(host, db, branch, branch.dataset, replacement, start=start)


async def _abandon(host: Host, db: DatabaseRecord, branch: BranchRecord, replacement: str
                   ) -> None:
    """Before the commit: the branch goes on with its own data."""
    try:
        await host.zfs.inherit(replacement, L.P_SWAP_KEEP)
        if branch.desired == Desired.RUNNING:
            await host.clusters.start(branch, db)
    finally:
        await host.zfs.set_props(branch.dataset, {L.P_PHASE: L.PHASE_READY})
        branch.phase = L.PHASE_READY


async def finish(host: Host, db: DatabaseRecord, branch: BranchRecord, old: str,
                 replacement: str, *, start: Starter | None = None) -> BranchRecord | None:
    """Rolls a committed swap forward from wherever it stands (idempotent)."""
    await _take_history(host, db, old, replacement)
    new = (await host.zfs.get_props(replacement, ["origin", *L.USER_PROPS]))[replacement]
    old_state = await _props_or_none(host, old, ["origin", *L.USER_PROPS])
    if old_state is not None and not old_state.user.get(L.P_REPLACED_BY):
        await _move_identity(host, db, branch, old, replacement, old_state.user, new.user)
    _step("moved")
    branch.dataset, branch.origin = replacement, new.origin
    branch.version = new.user.get(L.P_VERSION, "")
    await host.zfs.inherit(replacement, L.P_REPLACES)
    # The branch serves again as early as it can; the rest does not touch its data.
    await _start(host, db, branch, start)
    _step("started")
    kept = None
    if old_state is not None:
        kept = await _keep_or_drop(host, db, branch, old, old_state,
                                   new.user.get(L.P_SWAP_KEEP, ""))
    await host.zfs.inherit(replacement, L.P_SWAP_KEEP)
    if branch.is_main:
        await _follow_main_version(host, db, branch)
    await reparent(host, db.id)
    await host.zfs.set_props(replacement, {L.P_PHASE: L.PHASE_READY})
    branch.phase = L.PHASE_READY
    return kept


async def _take_history(host: Host, db: DatabaseRecord, old: str, replacement: str) -> None:
    """`zfs promote` the replacement while its origins lead back to the data it
    replaces (a child, or a deeper descendant), so that data can go or stay
    without holding the new data's past. The replacement's origin is read fresh
    each time; the other datasets' come from the catalog (a promote changes only
    the promoted one's and those below it, which the walk does not pass)."""
    inv = await host.database_inventory(db.id, snapshots=False)
    origins = {name: ds.origin for name, ds in inv.datasets.items() if not ds.is_snapshot}
    for _ in range(64):
        origin = (await host.zfs.get_props(replacement, ["origin"]))[replacement].origin
        while origin is not None:
            parent = origin.split("@", 1)[0]
            if parent == old:
                await host.zfs.promote(replacement)
                _step("promoted")
                break
            origin = origins.get(parent)
        else:
            return


async def _props_or_none(host: Host, name: str, props: list[str]) -> Dataset | None:
    try:
        return (await host.zfs.get_props(name, props))[name]
    except DatasetNotFound:
        return None


async def _move_identity(host: Host, db: DatabaseRecord, branch: BranchRecord, old: str,
                         replacement: str, old_user: dict[str, str], new_user: dict[str, str]
                         ) -> None:
    """Copies the identity and password onto the hidden replacement, pins the old
    data's major, then moves the identity with one write."""
    source = host.clusters.files(branch).secret_file
    target = host.clusters.files(_at(branch, replacement)).secret_file
    if source.is_file() and target.parent.is_dir():
        target.write_bytes(source.read_bytes())
        target.chmod(0o600)
    await write_props(host, replacement, identity(branch) | {L.P_PHASE: L.PHASE_RESETTING},
                      new_user)
    if not old_user.get(L.P_VERSION):
        await host.zfs.set_props(old, {L.P_VERSION: db.version_of(branch)})
    await host.zfs.set_props(old, {L.P_REPLACED_BY: replacement})


async def write_props(host: Host, dataset: str, props: dict[str, str],
                      current: dict[str, str] | None = None) -> None:
    """Sets each property that differs from `current` (None: unknown); an empty
    value is cleared (`zfs set` refuses empty values)."""
    for key, value in props.items():
        if current is not None and current.get(key, "") == value:
            continue
        if value:
            await host.zfs.set_props(dataset, {key: value})
        else:
            await host.zfs.inherit(dataset, key)


def _at(branch: BranchRecord, dataset: str) -> BranchRecord:
    copy = BranchRecord(**{**branch.__dict__, "snapshots": []})
    copy.dataset = dataset
    return copy


async def _keep_or_drop(host: Host, db: DatabaseRecord, branch: BranchRecord, old: str,
                        old_state: Dataset, keep_as: str) -> BranchRecord | None:
    old_origin = old_state.origin
    if not keep_as:
        try:
            await host.zfs.destroy(old, recursive=True)
        except HasDependents:
            # Branches were made from its snapshots meanwhile: keep it rather than them.
            taken = {b.name for b in db.branches.values()}
            keep_as = kept_name(branch.name, taken)
            log.warning("branch %s: the replaced data has dependent branches; kept as %r",
                        branch.id, keep_as)
        else:
            if old_origin:
                await drop_branch_point(host, old_origin)
            return None
    port = host.ports.reserve()
    kept = BranchRecord(L.new_id("br"), keep_as, db.id, branch.id, old, old_origin, port,
                        Desired.STOPPED, L.PHASE_READY, time.time(), "", 0, 0,
                        version=db.version_of(branch))
    try:
        await write_props(host, old, identity(kept) | {L.P_PHASE: L.PHASE_READY},
                          old_state.user)
        await host.zfs.inherit(old, L.P_REPLACED_BY)
    except BaseException:
        host.ports.release(port)
        raise
    host.ports.commit(port)
    return kept


async def _follow_main_version(host: Host, db: DatabaseRecord, main: BranchRecord) -> None:
    """The database's major is its main's: when main's data is another major (an
    upgraded branch promoted), every other branch keeps its own first."""
    if not main.version or main.version == db.version:
        if main.version:
            await host.zfs.inherit(main.dataset, L.P_VERSION)
            main.version = ""
        return
    listing = (await host.database_inventory(db.id, snapshots=False)).datasets
    for ds in listing.values():
        if (ds.user.get(L.P_KIND) == "branch" and ds.name != main.dataset
                and not ds.user.get(L.P_VERSION)):
            await host.zfs.set_props(ds.name, {L.P_VERSION: db.version})
    log.info("database %s: PostgreSQL %s -> %s with its new main", db.id, db.version,
             main.version)
    await host.zfs.set_props(db.dataset, {L.P_VERSION: main.version})
    db.version = main.version
    await host.zfs.inherit(main.dataset, L.P_VERSION)
    main.version = ""


async def reparent(host: Host, database_id: str) -> None:
    """`cygnet:parent` follows each branch's ZFS origin: its parent is the branch
    that holds its origin snapshot (`zfs promote` moves snapshots between datasets)."""
    inv = await host.database_inventory(database_id)
    db = inv.databases.get(database_id)
    if db is None:
        return
    owners = {b.dataset: b for b in db.branches.values()}
    for b in db.branches.values():
        owner = owners.get((b.origin or "").split("@", 1)[0])
        if b.is_main or owner is None or owner.id == b.parent_id or owner.id == b.id:
            continue
        log.info("branch %s: parent %s -> %s (its origin moved)", b.id, b.parent_id, owner.id)
        await host.zfs.set_props(b.dataset, {L.P_PARENT: owner.id})
        b.parent_id = owner.id


async def _start(host: Host, db: DatabaseRecord, branch: BranchRecord,
                 start: Starter | None) -> None:
    """Starts the branch on its new data (the reply needs the password set), and
    stops it again if it should not run."""
    if host.clusters.live(branch) is not None:
        pass  # recovery of a swap that had started it already
    elif start is None:
        # Recovery: the safe path of a fresh clone (subscriptions disarmed).
        await host.clusters.start_clone(branch, db, subscriptions=1)
    else:
        await start(branch, db)
    secret = host.clusters.read_secret(branch)
    if secret:
        await host.clusters.set_password(branch, secret)
    if branch.desired != Desired.RUNNING:
        await host.clusters.stop(branch, "fast")


async def recover(host: Host, inv: Inventory, db: DatabaseRecord) -> None:
    """Finishes every swap in `db` that a crash cut short (run by the reconciler)."""
    by_dataset = {b.dataset: b for b in db.branches.values()}
    for old, replacement in list(inv.replacements.items()):
        branch = by_dataset.get(old)
        if branch is not None:
            log.warning("finishing the swap of branch %s (identity not moved yet)", branch.id)
            _add(db, await finish(host, db, branch, old, replacement.name))
    for old, replacement in list(inv.retired.items()):
        branch = by_dataset.get(replacement.name)
        if branch is not None:
            log.warning("finishing the swap of branch %s (identity moved)", branch.id)
            _add(db, await finish(host, db, branch, old, replacement.name))
    for branch in list(db.branches.values()):
        ds = inv.datasets.get(branch.dataset)
        replaced = ds.user.get(L.P_REPLACES, "") if ds is not None else ""
        if replaced and replaced not in inv.datasets:
            log.warning("finishing the swap of branch %s (old data gone)", branch.id)
            await finish(host, db, branch, replaced, branch.dataset)


def _add(db: DatabaseRecord, kept: BranchRecord | None) -> None:
    if kept is not None:
        db.branches[kept.id] = kept
