"""A moved database's backups go with it (docs/ha.md, "Moving databases").

Once main runs on the target and its archived WAL has come (move_archive.py),
the target asks the source for the database's backups (SendMoveBackups,
agent to agent, mTLS):

1. each backup's manifest, whole (a stored delta's base may be another
   database's backup, which the target need not hold);
2. the blocks its own repository lacks, by digest, in batches; each block is
   checked against its digest as it arrives and stored in new packs;
3. the manifests, under the same backup ids, once their blocks are committed.

All of it runs under the target repository's writer lock, so a backup, prune
or restore there never sees half of it, and a move that fails midway leaves
only packs no manifest names (garbage the next writer removes). Backups the
target holds already (a database moved back) are not fetched again. Then the
source is told to release its copies: they expire as a deleted database's do
(`wal_deleted_retention_days`, backup_janitor.py), so a restore of a point
before the move keeps working there meanwhile.

Blocks are served by digest to fleet hosts only (host certificates, as the
move's ZFS streams), and a 128-bit digest names a block only to whoever has
read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from cygnet.agent import backup_janitor, pieces
from cygnet.agent.host import Host
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.backup import manifest as manifests
from cygnet.backup.errors import CorruptRepository, RepositoryNotFound
from cygnet.backup.manifest import Manifest
from cygnet.backup.packs import MAX_GROUP, BlockReader, PackWriter, load_index
from cygnet.backup.repo import Repository, open_repository
from cygnet.blocks import BLOCK_SIZE, DIGEST_SIZE, BlockLocation, DedupIndex, hash_bytes
from cygnet.rpc.requests import MAX_DIGESTS

log = logging.getLogger("cygnet.agent.moves")

BLOCKS_PER_CHUNK = pieces.CHUNK // BLOCK_SIZE
LOCK_TIMEOUT = 600.0  # a backup running on the target finishes first
CALL_TIMEOUT = 3600.0


# --- the source's side ---------------------------------------------------------------


def _open(path: Path) -> Repository | None:
    try:
        return open_repository(path)
    except RepositoryNotFound:
        return None


def _backup_ids(path: Path, database_id: str) -> list[str]:
    repo = _open(path)
    if repo is None:
        return []
    out = []
    for backup_id in repo.backup_ids():
        with contextlib.suppress(CorruptRepository, OSError):
            info, _ = manifests.read_header(repo, backup_id)
            if info.metadata.get("database_id") == database_id:
                out.append(backup_id)
    return out


def _whole_manifest(path: Path, backup_id: str) -> bytes:
    repo = Repository(path)
    with repo.reader_lock(timeout=LOCK_TIMEOUT):
        return b"".join(manifests.encode(manifests.read_manifest(repo, backup_id)))


def _blocks(path: Path, digests: bytes) -> list[tuple[bytes, list[bytes]]]:
    """(digests, blocks) in batches of a message each. CorruptRepository names a
    block this repository does not hold, or holds damaged."""
    repo = Repository(path)
    out = []
    with repo.reader_lock(timeout=LOCK_TIMEOUT):
        index, _ = load_index(repo)
        reader = BlockReader(repo)
        try:
            for start in range(0, len(digests), BLOCKS_PER_CHUNK * DIGEST_SIZE):
                batch = digests[start:start + BLOCKS_PER_CHUNK * DIGEST_SIZE]
                blocks = []
                for off in range(0, len(batch), DIGEST_SIZE):
                    digest = batch[off:off + DIGEST_SIZE]
                    loc = index.get(digest)
                    if loc is None:
                        raise CorruptRepository(f"no block {digest.hex()} in {path}")
                    blocks.append(reader.read(digest, BlockLocation(*loc)))
                out.append((batch, blocks))
        finally:
            reader.close()
    return out


async def send(host: Host, req: pb.SendMoveBackupsRequest) -> AsyncIterator[pb.BackupChunk]:
    """SendMoveBackups (the source's side)."""
    path = host.config.backup_repository
    if req.release:
        await asyncio.to_thread(backup_janitor.mark_deleted, path, req.database, time.time())
        log.info("database %s moved with its backups: the copies here expire as a deleted "
                 "database's do", req.database)
        return
    if req.digests:
        for digests, blocks in await asyncio.to_thread(_blocks, path, req.digests):
            yield pb.BackupChunk(digests=digests, data=b"".join(blocks),
                                 block_sizes=[len(b) for b in blocks])
        return
    for backup_id in await asyncio.to_thread(_backup_ids, path, req.database):
        data = await asyncio.to_thread(_whole_manifest, path, backup_id)
        for piece, last in pieces.cut(data):
            yield pb.BackupChunk(backup_id=backup_id, data=piece, last=last)


# --- the target's side ---------------------------------------------------------------


async def _manifests(stub: Any, database_id: str) -> list[Manifest]:
    out: list[Manifest] = []
    stream = stub.SendMoveBackups(pb.SendMoveBackupsRequest(database=database_id),
                                  timeout=CALL_TIMEOUT)
    async for data, chunk in pieces.joined(stream, lambda c: c.backup_id):
        name = chunk.backup_id[:40]
        got = manifests.decode(data, f"{name}.manifest").materialize(None)
        if got.info.backup_id != chunk.backup_id or got.info.metadata.get(
                "database_id") != database_id:
            raise ValueError(f"the source sent backup {got.info.backup_id} as {name!r} "
                             f"of {database_id}")
        out.append(got)
    return out


def _lacking(index: DedupIndex, wanted: list[Manifest]) -> bytes:
    """The distinct digests these manifests name that the index lacks."""
    seen = DedupIndex()
    out = bytearray()
    for m in wanted:
        for i in index.missing(m.digests):
            digest = m.digests[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE]
            if seen.insert(digest, 0, 0, 0):
                out += digest
    return bytes(out)


def _store(writer: PackWriter, index: DedupIndex, chunk: pb.BackupChunk) -> int:
    """Checks each block against its digest and stores those still lacking."""
    digests, data, sizes = chunk.digests, chunk.data, chunk.block_sizes
    if len(sizes) * DIGEST_SIZE != len(digests) or sum(sizes) != len(data) or any(
            not 0 < size <= BLOCK_SIZE for size in sizes):
        raise ValueError(f"the source sent {len(data)} bytes in {len(sizes)} blocks for "
                         f"{len(digests) // DIGEST_SIZE} digests")
    blocks = []
    offset = 0
    for i, size in enumerate(sizes):
        digest = digests[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE]
        block = data[offset:offset + size]
        offset += size
        if hash_bytes(block) != digest:
            raise ValueError(f"block {digest.hex()} from the source does not match its digest")
        if digest not in index:
            blocks.append((digest, block))
    # As a backup stores them (backup/store.py): whole blocks in frames of
    # MAX_GROUP (found by slot * 8 KiB), a short one alone.
    whole = [b for b in blocks if len(b[1]) == BLOCK_SIZE]
    frames = [whole[k:k + MAX_GROUP] for k in range(0, len(whole), MAX_GROUP)]
    for frame in frames + [[b] for b in blocks if len(b[1]) < BLOCK_SIZE]:
        index.update(writer.add_blocks(frame))
    return len(blocks)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[tuple[Repository, DedupIndex, PackWriter]]:
    repo = open_repository(path, create=True)
    with repo.writer_lock(timeout=LOCK_TIMEOUT):
        repo.clean_garbage()
        index, _ = load_index(repo)
        writer = PackWriter(repo)
        try:
            yield repo, index, writer
        except BaseException:
            writer.abort()
            raise


async def pull(host: Host, stub: Any, database_id: str) -> tuple[int, int]:
    """The target's side: returns (backups, bytes of blocks) new here."""
    path = host.config.backup_repository
    await asyncio.to_thread(backup_janitor.mark_present, path, database_id)
    got = await _manifests(stub, database_id)
    if not got:
        return 0, 0
    stack = contextlib.ExitStack()
    repo, index, writer = await asyncio.to_thread(stack.enter_context, _writing(path))
    try:
        here = set(repo.backup_ids())
        wanted = [m for m in got if m.info.backup_id not in here]
        lacking = await asyncio.to_thread(_lacking, index, wanted)
        stored = 0
        for start in range(0, len(lacking), MAX_DIGESTS * DIGEST_SIZE):
            async for chunk in stub.SendMoveBackups(pb.SendMoveBackupsRequest(
                    database=database_id,
                    digests=lacking[start:start + MAX_DIGESTS * DIGEST_SIZE]),
                    timeout=CALL_TIMEOUT):
                stored += await asyncio.to_thread(_store, writer, index, chunk)
        if stored * DIGEST_SIZE != len(lacking):
            raise ValueError(f"the source sent {stored} of {len(lacking) // DIGEST_SIZE} blocks")
        await asyncio.to_thread(writer.commit)
        for m in wanted:  # once every block they name is committed
            await asyncio.to_thread(manifests.write_manifest, repo, m)
    except BaseException as exc:
        await asyncio.to_thread(stack.__exit__, type(exc), exc, exc.__traceback__)
        raise
    await asyncio.to_thread(stack.close)
    async for _ in stub.SendMoveBackups(pb.SendMoveBackupsRequest(
            database=database_id, release=True), timeout=60):
        pass
    return len(wanted), writer.bytes_written
