"""A moved database's backups go with it (agent/move_backups.py), between two real
repositories: the target fetches the manifests, then only the blocks it lacks,
checks each against its digest, and the source's copies are released. The gRPC
path between two agents is covered by tests/e2e/test_move.py."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cygnet import backup
from cygnet.agent import move_backups
from cygnet.api.v1 import agent_pb2 as pb


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def _host(repo: Path) -> Any:
    return SimpleNamespace(config=SimpleNamespace(backup_repository=repo))


class _Direct:
    """Calls the source's side in this process (`damage` flips a byte of each block
    batch)."""

    def __init__(self, source: Path, damage: bool = False) -> None:
        self.source, self.damage = _host(source), damage
        self.block_calls = self.blocks_asked = 0

    def SendMoveBackups(self, req: pb.SendMoveBackupsRequest,
                        timeout: float) -> AsyncIterator[pb.BackupChunk]:
        async def chunks() -> AsyncIterator[pb.BackupChunk]:
            if req.digests:
                self.block_calls += 1
                self.blocks_asked += len(req.digests) // 16
            async for chunk in move_backups.send(self.source, req):
                if self.damage and chunk.digests:
                    chunk.data = bytes([chunk.data[0] ^ 1]) + chunk.data[1:]
                yield chunk
        return chunks()


def _backup(repo: Path, tree: Path, database_id: str) -> str:
    return backup.create_backup(repo, tree, {"database_id": database_id,
                                             "database": f"name-{database_id}"}).backup_id


def _restored(repo: Path, backup_id: str, dest: Path) -> dict[str, bytes]:
    backup.restore(repo, backup_id, dest)
    return {p.name: p.read_bytes() for p in dest.iterdir()}


def test_the_backups_move_with_only_the_lacking_blocks(tmp_path: Path) -> None:
    shared, own = os.urandom(64 * 1024), os.urandom(40 * 8192 + 100)  # a short last block
    source, target = tmp_path / "source", tmp_path / "target"
    first = {"shared": shared, "own": own}
    second = {"shared": shared, "own": own[:8192] + os.urandom(8192) + own[16384:]}
    ids = [_backup(source, _tree(tmp_path / "a", first), "db1"),
           _backup(source, _tree(tmp_path / "b", second), "db1")]
    _backup(source, _tree(tmp_path / "c", {"x": os.urandom(8192)}), "db2")
    _backup(target, _tree(tmp_path / "d", {"shared": shared}), "db3")  # target has these

    stub = _Direct(source)
    count, size = asyncio.run(move_backups.pull(_host(target), stub, "db1"))
    assert count == 2 and size > 0
    listed = {i.backup_id: i.metadata["database_id"] for i in backup.list_backups(target)}
    assert {k for k, v in listed.items() if v == "db1"} == set(ids)
    assert "db2" not in listed.values()  # another database's backups stay
    assert _restored(target, ids[0], tmp_path / "r0") == first
    assert _restored(target, ids[1], tmp_path / "r1") == second
    # Neither the blocks the target had nor a block both backups share came twice:
    # the 41 blocks of db1's own file and the one the second backup changed.
    assert stub.block_calls == 1 and stub.blocks_asked == 42
    assert backup.verify(target).ok
    tombstones = json.loads((source / "deleted-databases.json").read_text())
    assert set(tombstones) == {"db1"}  # the source's copies now expire

    # Moved back, or asked again: nothing is fetched twice.
    again = _Direct(source)
    assert asyncio.run(move_backups.pull(_host(target), again, "db1")) == (0, 0)
    assert again.block_calls == 0


def test_a_damaged_block_stores_no_backup(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    backup_id = _backup(source, _tree(tmp_path / "a", {"f": os.urandom(10 * 8192)}), "db1")
    with pytest.raises(ValueError, match="does not match its digest"):
        asyncio.run(move_backups.pull(_host(target), _Direct(source, damage=True), "db1"))
    assert backup.list_backups(target) == []
    assert not (source / "deleted-databases.json").exists()  # nothing released
    count, _ = asyncio.run(move_backups.pull(_host(target), _Direct(source), "db1"))
    assert count == 1 and backup_id in [i.backup_id for i in backup.list_backups(target)]


def test_no_repository_on_the_source_moves_nothing(tmp_path: Path) -> None:
    assert asyncio.run(move_backups.pull(_host(tmp_path / "target"),
                                         _Direct(tmp_path / "none"), "db1")) == (0, 0)
