"""Every zfs verb against a real file-backed pool, and the typed errors it raises."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from cygnet.zfs import DatasetExists, DatasetNotFound, HasDependents, Zfs, ZfsTimeout
from cygnet.zfs.pools import pool_status
from cygnet.zfs.runner import CommandRunner
from tests.harness import FilePool

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pool() -> Iterator[FilePool]:
    p = FilePool.create("512M")
    yield p
    p.destroy()


def test_verbs_and_errors(pool: FilePool) -> None:
    asyncio.run(_verbs(pool.name))


async def _verbs(pool: str) -> None:
    zfs = Zfs()
    assert (await zfs.dialect()).name in ("zfs-fuse", "openzfs")
    root = f"{pool}/t"
    await zfs.create(root, {"cygnet:id": "x1"})
    with pytest.raises(DatasetExists):
        await zfs.create(root)
    await zfs.snapshot(f"{root}@s1", {"cygnet:name": "first"})
    await zfs.clone(f"{root}@s1", f"{pool}/c", {"cygnet:id": "c1"})
    listing = await zfs.list(pool, ["cygnet:id", "cygnet:name"])
    assert listing[f"{pool}/c"].origin == f"{root}@s1"
    assert listing[f"{root}@s1"].user == {"cygnet:name": "first"}
    assert listing[root].user == {"cygnet:id": "x1"}
    with pytest.raises(HasDependents):
        await zfs.destroy(f"{root}@s1")
    await zfs.set_props(f"{pool}/c", {"cygnet:phase": "ready", "cygnet:port": "5"})
    got = await zfs.get_props(f"{pool}/c", ["cygnet:phase", "cygnet:port"])
    assert got[f"{pool}/c"].user == {"cygnet:phase": "ready", "cygnet:port": "5"}
    await zfs.promote(f"{pool}/c")
    assert (await zfs.list(pool))[root].origin == f"{pool}/c@s1"
    await zfs.snapshot(f"{pool}/c@s2")
    with pytest.raises(HasDependents):
        await zfs.rollback(f"{pool}/c@s1")
    await zfs.rollback(f"{pool}/c@s1", destroy_newer=True)
    await zfs.rename(root, f"{pool}/renamed")
    assert await zfs.exists(f"{pool}/renamed") and not await zfs.exists(root)
    await zfs.destroy(f"{pool}/renamed", recursive=True)
    await zfs.destroy(f"{pool}/c", recursive=True)
    with pytest.raises(DatasetNotFound):
        await zfs.destroy(f"{pool}/c")
    status = await pool_status(zfs.runner, pool)
    assert status.health == "ONLINE" and status.size_bytes > status.free_bytes > 0


def test_runner_times_out_and_kills() -> None:
    async def go() -> None:
        with pytest.raises(ZfsTimeout):
            await CommandRunner().run(["sleep", "5"], timeout=0.2)

    asyncio.run(go())
