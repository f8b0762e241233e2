"""Moving a database here from another host: the target's side (docs/ha.md, "Moving databases").

The coordinator calls MoveIn on the target's agent, which pulls the whole
lineage from the source's agent over mutual TLS (host certificates; the
stream never passes through the coordinator):

1. round 0: PrepareMove on the source (a snapshot on every dataset), then
   every snapshot of every dataset, parents before clones: the first of a
   dataset as a full stream (main is a clone of the source's own template) or
   as an incremental from its origin (a clone receives as a clone), the rest
   incremental. Writes go on meanwhile.
2. the properties are copied (zfs-fuse sets one per call: before the stop);
   then catch-up rounds (each after a CHECKPOINT on the source, so dirty
   buffers travel now, not after the stop): only what is new travels. They
   stop once a round moved little, once a round moved no less than the one
   before (writes keep pace with the copy), or after MAX_CATCHUP.
3. the final round: PrepareMove(final) stops the database on the source (a
   CHECKPOINT first, while it still serves; then a smart shutdown, sessions
   ended, another CHECKPOINT and an immediate stop: move_source), and the last
   incremental arrives.
4. properties that changed, ports of this host, the dataset becomes a
   database, main starts: "started" goes to the coordinator, which switches
   its catalog; then the other branches start and the rounds' snapshots go.

The data arrives under a dataset of kind `moving-database`, which the
inventory does not read: nothing here sees the database before step 4. A
stream that breaks restarts that snapshot's stream (zfs-fuse has no resume
tokens; what arrived before stays). Any failure destroys what was received;
the coordinator then has the source start the database again (EndMove).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.duration_pb2 import Duration
from grpc import aio

from cygnet.agent import layout as L
from cygnet.agent import move_archive, move_backups
from cygnet.agent.events import EventKind, emit
from cygnet.agent.move_source import MOVE_KIND, P_MOVE_STOPPED
from cygnet.agent.service import AgentService, BranchRef
from cygnet.agent.timing import StepTimer
from cygnet.agent.transfer import Peers, peer_error
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.concurrency import bounded
from cygnet.errors import Aborted, FailedPrecondition, ResourceExhausted, Unavailable
from cygnet.postgres.versions import resolve_version
from cygnet.zfs import streams
from cygnet.zfs.errors import DatasetBusy, ZfsError
from cygnet.zfs.pools import pool_status

log = logging.getLogger("cygnet.agent.moves")

KIND_MOVING = "moving-database"
MAX_CATCHUP = 8  # catch-up rounds at most
CATCHUP_ENOUGH = 32 * 2**20  # a round that moved less than this is the last before the stop
CATCHUP_SHRINK = 0.8  # another round only while each moves at most this much of the last
ATTEMPTS = 3  # per stream: a broken one starts again
PROGRESS_EVERY = 1.0
STREAM_TIMEOUT = 6 * 3600.0
FAIL_AT_ENV = "CYGNET_TEST_MOVE_FAIL_AT"  # "final": tests make a move fail after its stop

Report = Callable[[pb.MoveProgress], None]


def another_catchup(done: int, before: float, moved: float) -> bool:
    """Whether a round that moved `moved` bytes (after one of `before`) is worth
    following with another before the stop: it moved much, and less than the
    one before it, so the rounds still converge."""
    return done < MAX_CATCHUP and CATCHUP_ENOUGH <= moved <= before * CATCHUP_SHRINK


class Move:
    """One MoveIn: the rounds, the stop, the start here."""

    def __init__(self, service: AgentService, peers: Peers, req: pb.MoveInRequest,
                 report: Report) -> None:
        self.service, self.host, self.req, self.report = service, service.host, req, report
        self.stub = peers.stub(req.source_address)
        self.target = ""  # this host's database dataset, once made
        self.source_base = ""
        self.ports: dict[str, int] = {}  # dataset name -> port reserved here
        self.moved_bytes = 0
        self.have: set[str] | None = None  # datasets and snapshots here, once read
        self.started = False  # main runs here: what is left is best effort, never undone

    def _say(self, phase: str, message: str = "", **fields: Any) -> None:
        self.report(pb.MoveProgress(database_id=self.req.database, phase=phase, message=message,
                                    host_id=self.host.config.host_id,
                                    moved_bytes=self.moved_bytes, **fields))

    async def _call(self, method: str, request: Any, timeout: float = 120.0) -> Any:
        try:
            return await getattr(self.stub, method)(request, timeout=timeout)
        except aio.AioRpcError as exc:
            raise peer_error(self.req.source_host_id, exc) from None

    async def _prepare(self, round_name: str, final: bool) -> pb.MovePlan:
        plan: pb.MovePlan = await self._call("PrepareMove", pb.PrepareMoveRequest(
            database=self.req.database, round=round_name, final=final))
        self.source_base = plan.dataset
        return plan

    async def run(self) -> None:
        await self._check_fresh()
        token = secrets.token_hex(4)
        self._say("prepare", f"from host {self.req.source_host_id}")
        plan = await self._prepare(f"mv{token}-0", final=False)
        try:
            await self._check_plan(plan)
            self.target = await self._make_dataset(plan)
            moved = await self._round(plan, 0, "full")
            await self._copy_props(plan, final=False)
            n, before = 0, float("inf")
            while another_catchup(n, before, moved):
                n += 1
                plan = await self._prepare(f"mv{token}-{n}", final=False)
                before, moved = moved, await self._round(plan, n, "catch-up")
            stop, steps = time.monotonic(), StepTimer()
            self._say("final", "stopping the database on the source")
            with steps.step("source stop"):
                plan = await self._prepare(f"mv{token}-f", final=True)
            with steps.step("final round"):
                await self._round(plan, n + 1, "final")
            if os.environ.get(FAIL_AT_ENV) == "final":  # tests: a failure after the stop
                raise Aborted(f"the move was made to fail after its final round ({FAIL_AT_ENV})")
            main_id = await self._switch_here(plan, steps)
            down = time.monotonic() - stop
            log.info("move of %s: down %s", self.req.database, steps)
        except BaseException as exc:
            log.warning("move of %s failed (%s); removing what was received", self.req.database,
                        exc)
            await asyncio.shield(self._undo())
            raise
        self.started = True
        self._say("started", f"main runs here after {down:.3f}s down",
                  downtime=Duration(seconds=int(down), nanos=int(down % 1 * 1e9)))
        await self._after(plan, main_id)
        await self._archive(plan)
        await self._backups(plan)
        self._say("done", f"{self.moved_bytes} bytes in {n + 2} rounds")

    # --- checks and the dataset ------------------------------------------------------

    async def _check_fresh(self) -> None:
        """Nothing of this database here yet (a leftover of a failed move goes)."""
        for pool in self.host.config.pools:
            name = L.database(pool, self.req.database)
            if not await self.host.zfs.exists(name):
                continue
            kind = (await self.host.zfs.get_props(name, [L.P_KIND]))[name].user.get(L.P_KIND)
            if kind != KIND_MOVING:
                raise FailedPrecondition(f"host {self.host.config.host_id} holds database "
                                         f"{self.req.database} already ({kind})")
            log.info("removing %s, left by a move that failed", name)
            await self.host.zfs.destroy(name, recursive=True)

    async def _check_plan(self, plan: pb.MovePlan) -> None:
        versions = {plan.postgres_version, *(d.properties.get(L.P_VERSION, "")
                                             for d in plan.datasets)} - {""}
        for version in sorted(versions):
            try:
                resolve_version(version, self.host.config.postgres_root)
            except Exception:
                raise FailedPrecondition(
                    f"host {self.host.config.host_id} has no PostgreSQL {version}, which "
                    f"database {plan.database_name} runs: not moved, nothing changed") from None

    async def _make_dataset(self, plan: pb.MovePlan) -> str:
        free = {p: (await pool_status(self.host.zfs.runner, p)).free_bytes
                for p in self.host.config.pools}
        pool = max(free, key=free.__getitem__)
        need = plan.used_bytes + self.host.config.min_free_bytes
        if free[pool] < need:
            raise ResourceExhausted(
                f"no pool on host {self.host.config.host_id} has room for database "
                f"{plan.database_name}: {need // 2**20} MiB needed, {free[pool] // 2**20} MiB "
                "free; not moved, nothing changed")
        name = L.database(pool, plan.database_id)
        await self.host.zfs.create(name, {
            "canmount": "off", L.P_KIND: KIND_MOVING, L.P_ID: plan.database_id,
            L.P_NAME: plan.database_name, L.P_PHASE: L.PHASE_CREATING,
            L.P_CREATED: f"{time.time():.3f}"})
        return name

    async def _undo(self) -> None:
        for port in self.ports.values():
            self.host.ports.release(port)
        if not self.target:
            return
        try:
            db = self.host.find_database(self.req.database)
            for b in db.branches.values() if db is not None else ():
                if self.host.clusters.live(b) is not None:
                    await self.host.clusters.stop(b, "immediate")
            await self.host.zfs.destroy(self.target, recursive=True)
            self.host.known.pop(self.req.database, None)
        except Exception as exc:
            log.error("move of %s: %s not removed: %s", self.req.database, self.target, exc)

    # --- rounds ------------------------------------------------------------------------

    async def _present(self) -> set[str]:
        """What has arrived here: read once, then kept as streams land (nothing else
        writes a moving database), so the rounds after the stop list nothing."""
        if self.have is None:
            self.have = set(await self.host.zfs.get_props(self.target, ["type"],
                                                          recursive=True))
        return self.have

    async def _round(self, plan: pb.MovePlan, n: int, phase: str) -> int:
        """Every snapshot of the plan this host lacks; returns the bytes moved.

        The datasets this host has already are brought up to date side by side
        (`move_streams` at once): each stream has a fixed cost (a zfs send and
        recv, ~0.1-0.2 s on zfs-fuse), and the final round runs while the
        database is down. New datasets follow one at a time, in the plan's
        order, so each comes after the one holding its origin, up to date.
        """
        present = await self._present()
        total = sum(d.referenced_bytes for d in plan.datasets) if n == 0 else 0
        self._say(phase, f"round {n}", round=n, total_bytes=total)
        behind: list[tuple[pb.MoveDataset, int]] = []
        new: list[pb.MoveDataset] = []
        for ds in plan.datasets:
            names = [s.name for s in ds.snapshots]
            have = [i for i, s in enumerate(names) if f"{self.target}/{ds.name}@{s}" in present]
            if have:
                behind.append((ds, have[-1]))
            elif names:
                new.append(ds)
        moved = sum(await bounded(self.host.config.move_streams, (
            self._pull_after(ds, last, n=n, phase=phase, total=total) for ds, last in behind)))
        for ds in new:
            origin = (ds.origin_dataset, ds.origin_snapshot) if ds.origin_dataset else None
            moved += await self._pull(ds.name, ds.snapshots[0].name, origin, new=True, n=n,
                                      phase=phase, total=total)
            moved += await self._pull_after(ds, 0, n=n, phase=phase, total=total)
        log.info("move of %s: round %d (%s) moved %d bytes", plan.database_id, n, phase, moved)
        return moved

    async def _pull_after(self, ds: pb.MoveDataset, last: int, *, n: int, phase: str,
                          total: int) -> int:
        """The dataset's snapshots after its `last`, which this host has, in order."""
        moved, names = 0, [s.name for s in ds.snapshots]
        for i in range(last + 1, len(names)):
            moved += await self._pull(ds.name, names[i], (ds.name, names[i - 1]), new=False,
                                      n=n, phase=phase, total=total)
        return moved

    async def _pull(self, leaf: str, snap: str, base: tuple[str, str] | None, *, new: bool,
                    n: int, phase: str, total: int) -> int:
        req = pb.SendMoveStreamRequest(database=self.req.database, dataset=leaf, snapshot=snap,
                                       base_dataset=base[0] if base else "",
                                       base_snapshot=base[1] if base else "")
        target = f"{self.target}/{leaf}"
        for attempt in range(1, ATTEMPTS + 1):
            try:
                sent = await self._stream(req, target, force=not new, n=n, phase=phase,
                                          total=total)
                (await self._present()).update((target, f"{target}@{snap}"))
                return sent
            except (Unavailable, Aborted, DatasetBusy) as exc:
                if attempt == ATTEMPTS:
                    raise
                log.warning("stream of %s@%s broke (%s); it starts again (%d of %d)", leaf, snap,
                            exc, attempt + 1, ATTEMPTS)
                await asyncio.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    async def _stream(self, req: pb.SendMoveStreamRequest, target: str, *, force: bool, n: int,
                      phase: str, total: int) -> int:
        sent, last = 0, time.monotonic()
        try:
            with self.host.receiving(target):
                async with streams.Receiver(target, force=force, zfs=self.host.zfs) as sink:
                    async for chunk in self.stub.SendMoveStream(req, timeout=STREAM_TIMEOUT):
                        await sink.write(chunk.data)
                        self.moved_bytes += len(chunk.data)
                        sent += len(chunk.data)
                        if time.monotonic() - last >= PROGRESS_EVERY:
                            last = time.monotonic()
                            self._say(phase, f"{req.dataset}@{req.snapshot}", round=n,
                                      sent_bytes=sent, total_bytes=total)
                    await sink.finish()
        except aio.AioRpcError as exc:
            self.moved_bytes -= sent
            raise peer_error(self.req.source_host_id, exc) from None
        except BaseException:
            self.moved_bytes -= sent
            raise
        return sent

    # --- properties, the switch, the start ---------------------------------------------

    def _translate(self, value: str) -> str:
        """A property naming one of the source's datasets names this host's."""
        if self.source_base and value.startswith(self.source_base + "/"):
            return self.target + value[len(self.source_base):]
        return value

    async def _copy_props(self, plan: pb.MovePlan, final: bool) -> None:
        """Sets what differs from the source (one `zfs set` per property on zfs-fuse)."""
        # Only the properties the plan names: `all` is some 70 per dataset and
        # snapshot, and the final call runs while the database is down.
        keys = {*plan.properties, L.P_DESIRED, L.P_PORT}
        for d in plan.datasets:
            keys |= set(d.properties) | {k for snap in d.snapshots for k in snap.properties}
        found = await self.host.zfs.get_props(self.target, sorted(keys), recursive=True)

        async def copy(name: str, wanted: dict[str, str]) -> None:
            have = found[name].user if name in found else {}
            # (zfs set refuses an empty value; an empty property is as good as none)
            diff = {k: v for k, v in wanted.items() if v and have.get(k) != v}
            if diff:
                await self.host.zfs.set_props(name, diff)

        db_props = {k: self._translate(v) for k, v in plan.properties.items()
                    if k not in (L.P_KIND, P_MOVE_STOPPED)}
        await copy(self.target, db_props)
        for ds in plan.datasets:
            here = f"{self.target}/{ds.name}"
            wanted = {k: self._translate(v) for k, v in ds.properties.items()}
            if L.P_PORT in wanted:
                if here not in self.ports:
                    self.ports[here] = self.host.ports.reserve()
                wanted[L.P_PORT] = str(self.ports[here])
            if final and ds.running:
                wanted[L.P_DESIRED] = "running"
            await copy(here, wanted)
            for snap in ds.snapshots:
                if snap.properties.get(L.P_SNAP_KIND) != MOVE_KIND:
                    await copy(f"{here}@{snap.name}", dict(snap.properties))

    async def _switch_here(self, plan: pb.MovePlan, steps: StepTimer) -> str:
        """The last properties, the dataset becomes a database, main starts."""
        with steps.step("properties"):
            await self._copy_props(plan, final=True)
            if plan.quota_bytes:  # no stream carries a native property: the quota goes here
                await self.host.zfs.set_props(self.target, {"quota": str(plan.quota_bytes)})
            await self._drop_gone(plan)
            await self.host.zfs.set_props(self.target, {L.P_KIND: "database"})
        for port in self.ports.values():
            self.host.ports.commit(port)
        self.host._catalog.touched_tree(self.target)
        with steps.step("catalog and mounts"):
            inv = await self.host.database_inventory(plan.database_id)
            db = inv.databases[plan.database_id]
            main = db.main
            if main is None:
                raise FailedPrecondition(f"database {db.name} arrived without its main branch")
            for b in db.branches.values():
                if not self.host.parks(b) and not self.host.mounted(b):
                    await self.host.zfs.mount(b.dataset)
        with steps.step("main's start"):
            if any(d.running and d.branch_id == main.id for d in plan.datasets):
                await self.service.set_running(BranchRef(branch_id=main.id), True, "")
        return main.id

    async def _drop_gone(self, plan: pb.MovePlan) -> None:
        """What the source deleted while the rounds ran (a branch, a snapshot) goes here
        too. Deleted branches' clones were deleted with them: a pass destroys what has
        no dependents left, until nothing is left or a pass destroys nothing."""
        wanted = {f"{self.target}/{d.name}" for d in plan.datasets}
        wanted |= {f"{self.target}/{d.name}@{s.name}" for d in plan.datasets for s in d.snapshots}
        found = await self._present()
        gone = [n for n in found if n != self.target and n not in wanted
                and n.split("@")[0] not in found - wanted]  # a snapshot goes with its dataset
        if gone:
            self.have = None  # read again after what this destroys
        while gone:
            left = []
            for name in gone:
                try:
                    await self.host.zfs.destroy(name, recursive="@" not in name)
                    log.info("move of %s: %s was deleted on the source meanwhile",
                             plan.database_id, name)
                except ZfsError:
                    left.append(name)
            if len(left) == len(gone):
                raise FailedPrecondition(f"move of {plan.database_id}: {', '.join(left)} "
                                         "deleted on the source could not be removed here")
            gone = left

    async def _archive(self, plan: pb.MovePlan) -> None:
        """Best effort once main runs: the database's archived WAL comes along."""
        try:
            files, size = await move_archive.pull(self.host, self.stub, plan.database_id)
        except Exception as exc:  # the move is done: only older points are out of reach
            log.error("move of %s: its archived WAL stays on %s (%s); point-in-time branches "
                      "here start at the move", plan.database_id, self.req.source_host_id,
                      str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self._say("archive", f"archived WAL not copied: {exc}")
            return
        log.info("move of %s: %d archived WAL files (%d bytes) copied", plan.database_id,
                 files, size)
        self._say("archive", f"{files} archived WAL files ({size} bytes) copied")

    async def _backups(self, plan: pb.MovePlan) -> None:
        """Best effort once main runs: the database's backups come along."""
        try:
            count, size = await move_backups.pull(self.host, self.stub, plan.database_id)
        except Exception as exc:  # the move is done: its backups stay on the source
            log.error("move of %s: its backups stay on %s (%s); restores of them name that "
                      "host", plan.database_id, self.req.source_host_id,
                      str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self._say("backups", f"backups not copied: {exc}")
            return
        log.info("move of %s: %d backups copied (%d bytes of blocks new here)",
                 plan.database_id, count, size)
        self._say("backups", f"{count} backups copied ({size} bytes of blocks new here)")

    async def _after(self, plan: pb.MovePlan, main_id: str) -> None:
        """Best effort once main runs: the other branches start, the rounds' snapshots go."""
        for ds in plan.datasets:
            if ds.running and ds.branch_id and ds.branch_id != main_id:
                try:
                    await self.service.set_running(BranchRef(branch_id=ds.branch_id), True, "")
                except Exception as exc:
                    log.error("moved branch %s did not start: %s", ds.branch_id, exc)
            for snap in ds.snapshots:
                if snap.properties.get(L.P_SNAP_KIND) == MOVE_KIND:
                    try:
                        await self.host.zfs.destroy(f"{self.target}/{ds.name}@{snap.name}")
                    except ZfsError as exc:
                        log.warning("round snapshot %s@%s stays: %s", ds.name, snap.name, exc)
        emit(EventKind.READY, database_id=plan.database_id, branch_id=main_id,
             database=plan.database_name, branch="main",
             reason=f"moved from host {self.req.source_host_id}")


_finishing: set[asyncio.Task[None]] = set()  # moves whose caller left after the start


async def move_in(service: AgentService, peers: Peers, req: pb.MoveInRequest
                  ) -> AsyncIterator[pb.MoveProgress]:
    """MoveIn's handler: the move runs in a task; its progress streams back. A caller
    that goes away cancels it (what was received is removed), unless main runs here
    already: then the other branches' start and the cleanup still happen."""
    if req.source_host_id == service.host.config.host_id:
        raise FailedPrecondition(f"database {req.database} is on host "
                                 f"{req.source_host_id} already")
    queue: asyncio.Queue[pb.MoveProgress | None] = asyncio.Queue()
    move = Move(service, peers, req, queue.put_nowait)
    task = asyncio.create_task(move.run())
    task.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while (item := await queue.get()) is not None:
            yield item
        await task
    finally:
        if not task.done() and move.started:
            log.warning("move of %s: its caller went away after main started here; the "
                        "move's last steps go on", req.database)
            _finishing.add(task)
            task.add_done_callback(_finishing.discard)
        elif not task.done():
            task.cancel()
            with_result = await asyncio.gather(task, return_exceptions=True)
            log.info("move of %s cancelled: %s", req.database, with_result[0])
