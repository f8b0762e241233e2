"""After a killed `zfs`, the zfs layer looks at the dataset instead of assuming."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from cygnet.zfs import Zfs, ZfsTimeout
from cygnet.zfs.settle import settled
from tests.harness import FilePool

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pool() -> Iterator[FilePool]:
    p = FilePool.create("128M")
    yield p
    p.destroy()


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
