"""Every zfs verb against a real file-backed pool, and the typed errors it raises."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from cygnet.zfs import DatasetExists, DatasetNotFound, HasDependents, Zfs, ZfsTimeout
from cygnet.zfs.pools import pool_status
from cygnet.zfs.runner import CommandRunner
from cygnet.zfs.settle import settled
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
    # Named ones, some missing: the others still answer.
    some = await zfs.get_existing([f"{pool}/nope", f"{pool}/c", f"{root}@nope"], ["cygnet:phase"])
    assert list(some) == [f"{pool}/c"] and some[f"{pool}/c"].user == {"cygnet:phase": "ready"}
    assert await zfs.get_existing([f"{pool}/nope"], ["cygnet:phase"]) == {}
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


# After a killed `zfs`, the zfs layer looks at the dataset instead of assuming.

def test_a_timed_out_verb_is_judged_by_what_exists(pool: FilePool) -> None:
    async def go() -> None:
        zfs = Zfs()
        here, missing = f"{pool.name}/here", f"{pool.name}/missing"
        await zfs.create(here)
        killed = ZfsTimeout("zfs did not finish within 60s", argv=["zfs", "create", here])
        await settled(zfs.runner, killed, here, exists_after=True)  # it was done: no error
        await settled(zfs.runner, killed, missing, exists_after=False)
        with pytest.raises(ZfsTimeout, match=f"{missing} does not exist after it was killed"):
            await settled(zfs.runner, killed, missing, exists_after=True)
        with pytest.raises(ZfsTimeout, match=f"{here} still exists after it was killed"):
            await settled(zfs.runner, killed, here, exists_after=False)
        await zfs.destroy(here)

    asyncio.run(go())


def test_a_zfs_killed_at_once_leaves_a_known_answer(pool: FilePool) -> None:
    """A deadline too short for any `zfs create`: whether zfs got to create the
    dataset or not, the verb's answer matches the dataset as read right after."""
    async def go() -> None:
        zfs = Zfs()
        name = f"{pool.name}/hurried"
        hurried = Zfs(type(zfs.runner)(timeout=0.001))
        try:
            await hurried.create(name)
            assert await zfs.exists(name)
        except ZfsTimeout as exc:
            assert "does not exist after it was killed" in str(exc)
        await asyncio.sleep(0.5)  # zfs-fuse may finish the create later: let it, then clean up
        if await zfs.exists(name):
            await zfs.destroy(name)

    asyncio.run(go())
