"""The catalog's grouping and the inventory's view of a swap under way (pure logic)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest

from cygnet.agent import layout as L
from cygnet.agent.catalog import Catalog, TrackedZfs, group_of, parked
from cygnet.agent.catalog_file import Journal, Saved
from cygnet.agent.inventory import build
from cygnet.zfs import Dataset, Zfs

DB = "p/cygnet/db/dbaaaaaaaaaa"


def test_group_of_names_the_database_dataset() -> None:
    assert group_of(DB) == DB
    assert group_of(f"{DB}/brbbbbbbbbbb") == DB
    assert group_of(f"{DB}/brbbbbbbbbbb@sncccccccccc") == DB
    assert group_of("p/cygnet") == ""
    assert group_of("p/cygnet/templates/pg15@golden") == ""
    assert group_of("p/cygnet/db") == ""


def _datasets(old_user: dict[str, str], new_user: dict[str, str] | None) -> dict[str, Dataset]:
    ident = {L.P_KIND: "branch", L.P_ID: "brbbbbbbbbbb", L.P_NAME: "main",
             L.P_DATABASE: "dbaaaaaaaaaa", L.P_PORT: "5432"}
    out = {DB: Dataset(DB, user={L.P_KIND: "database", L.P_ID: "dbaaaaaaaaaa", L.P_NAME: "d"}),
           f"{DB}/old": Dataset(f"{DB}/old", user=ident | old_user)}
    if new_user is not None:
        out[f"{DB}/new"] = Dataset(f"{DB}/new", user=new_user)
    return out


def test_a_swap_shows_one_branch_at_every_step() -> None:
    ident = {L.P_KIND: "branch", L.P_ID: "brbbbbbbbbbb", L.P_NAME: "main",
             L.P_DATABASE: "dbaaaaaaaaaa", L.P_PORT: "5432"}
    other = {L.P_KIND: "branch", L.P_ID: "brdddddddddd", L.P_NAME: "fix",
             L.P_DATABASE: "dbaaaaaaaaaa", L.P_PARENT: "brbbbbbbbbbb", L.P_PORT: "5433"}
    # Committed: the replacement is hidden, the old data is still the branch.
    inv = build(_datasets({}, other | {L.P_REPLACES: f"{DB}/old"}))
    (main,) = inv.databases["dbaaaaaaaaaa"].branches.values()
    assert main.dataset == f"{DB}/old" and f"{DB}/old" in inv.replacements
    # Identity moved: the replacement is the branch, the old data hidden.
    inv = build(_datasets({L.P_REPLACED_BY: f"{DB}/new"}, ident | {L.P_REPLACES: f"{DB}/old"}))
    (main,) = inv.databases["dbaaaaaaaaaa"].branches.values()
    assert main.dataset == f"{DB}/new" and f"{DB}/old" in inv.retired
    # The old data gone: the replacement alone.
    inv = build({n: d for n, d in _datasets({}, ident | {L.P_REPLACES: f"{DB}/old"}).items()
                 if n != f"{DB}/old"})
    (main,) = inv.databases["dbaaaaaaaaaa"].branches.values()
    assert main.dataset == f"{DB}/new"



def test_only_suspended_branches_are_parked() -> None:
    def branch(desired: str) -> Dataset:
        return Dataset(f"{DB}/br{desired[:4]}", user={L.P_KIND: "branch", L.P_DESIRED: desired})

    assert parked(branch("suspended"))
    assert not parked(branch("running")) and not parked(branch("stopped"))
    assert not parked(Dataset(DB, user={L.P_KIND: "database", L.P_DESIRED: "suspended"}))


def test_the_mount_check_leaves_parked_branches_unmounted() -> None:
    catalog = Catalog(Zfs(), ("p",))
    native = {"mounted": "no", "canmount": "on", "mountpoint": "/m"}
    catalog.groups[DB] = {
        DB: Dataset(DB, native=native, user={L.P_KIND: "database"}),
        f"{DB}/brparked": Dataset(f"{DB}/brparked", native=native,
                                  user={L.P_KIND: "branch", L.P_DESIRED: "suspended"}),
        f"{DB}/brstopped": Dataset(f"{DB}/brstopped", native=native,
                                   user={L.P_KIND: "branch", L.P_DESIRED: "stopped"}),
    }
    catalog.groups[DB][f"{DB}/brroot"] = Dataset(  # mounted, by the kernel's table
        f"{DB}/brroot", native=native | {"mountpoint": "/"}, user={L.P_KIND: "branch"})
    assert catalog.unmounted() == [DB, f"{DB}/brstopped"]


class _CutShort(Zfs):
    """A listing that never finishes: the resync a stop cancels."""

    async def get_props(self, *args: object, **kwargs: object) -> dict[str, Dataset]:
        raise asyncio.CancelledError


def test_a_resync_cut_short_keeps_the_catalog_read_before() -> None:
    catalog = Catalog(_CutShort(), ("p",))
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(catalog.load())
    assert not catalog.loaded  # a first load: nothing to read from
    asyncio.run(catalog.adopt(Saved({DB: {DB: Dataset(DB, user={L.P_KIND: "database"})}},
                                    "g", {})))
    version = catalog.version
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(catalog.load())
    assert catalog.loaded and not catalog.dirty and DB in catalog.datasets(DB)
    assert catalog.version == version


class _Writes(Zfs):
    """ZFS writes that succeed, or fail, without a pool; reads that find nothing."""

    fail = False
    journal_path: Path  # the journal _Tracked's writes go through

    def catalog_writing(self) -> int:
        """How many writes the catalog holds as started (_Tracked's)."""
        raise NotImplementedError

    async def destroy(self, name: str, *, recursive: bool = False) -> None:
        if self.fail:
            raise OSError("busy")

    async def set_props(self, name: str, props: Mapping[str, str]) -> None:
        journal = Journal.read(self.journal_path, "g1")
        assert journal is not None and name in journal  # journalled before it starts
        assert self.catalog_writing() == 1

    async def get_existing(self, names: object, props: object) -> dict[str, Dataset]:
        return {}

    async def get_props(self, *args: object, **kwargs: object) -> dict[str, Dataset]:
        return {}


class _Tracked(TrackedZfs, _Writes):
    journal_path = Path()

    def catalog_writing(self) -> int:
        assert self.catalog is not None
        return self.catalog.writing


def test_each_write_is_journalled_before_it_starts_and_holds_off_a_save(tmp_path: Path) -> None:
    zfs = _Tracked()
    zfs.journal_path = tmp_path / "catalog.journal"
    catalog = Catalog(zfs, ("p",))
    zfs.catalog = catalog
    asyncio.run(catalog.adopt(Saved({DB: {DB: Dataset(DB), f"{DB}/b": Dataset(f"{DB}/b")}},
                                    "g1", {})))
    catalog.journal = Journal(zfs.journal_path)
    catalog.journal.begin("g1")
    assert catalog.quiet

    asyncio.run(zfs.set_props(f"{DB}/b", {"cygnet:name": "x"}))
    assert catalog.writing == 0 and not catalog.quiet  # marked: to be read back first
    asyncio.run(catalog.refresh())
    assert catalog.quiet

    zfs.fail = True  # a failed destroy: the whole tree is read again
    with pytest.raises(OSError):
        asyncio.run(zfs.destroy(f"{DB}/b"))
    assert Journal.read(zfs.journal_path, "g1") == {f"{DB}/b": True}
    zfs.fail = False
    asyncio.run(zfs.destroy(DB, recursive=True))
    assert catalog.writing == 0 and catalog.datasets(DB) == {}
