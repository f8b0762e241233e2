"""Failsafe mode (docs/ha.md "Failsafe"), as in Patroni: a replicated primary keeps
writing while no coordinator renews its host's lease, as long as the host of
every replica confirms it, and a confirmed replica is not promoted meanwhile.

Without it, an outage of the coordinators' store (or of every coordinator)
fences every replicated primary after 2/3 of the lease TTL, although nothing
failed over. A host cannot tell that outage from its own partition, so the
replicas decide:
- the primary's host (run): when a renewal is late (the deadline is a
  quarter of the TTL away: no coordinator renewed it), it asks each replica's host,
  for every replicated primary it runs, to confirm (ConfirmPrimary). If all
  confirm, it renews its own lease file as a heartbeat would (the deadline is
  2/3 TTL after the round was sent). Otherwise each database that every one of
  its replicas confirmed gets the same deadline in a file of its own
  (cygnet_fence.failsafe_file), and the others fence at the lease deadline, as
  without failsafe: one refusal or silence fences that database only. A primary
  fenced already (its deadline passed while cygnetd restarted, say) that every
  replica confirms gets its own deadline and its fence lifted, as the
  coordinator's word would lift it;
- a replica's host (Holds): a confirmation holds off a failover's promotion
  of that replica for one TTL; the coordinator asks PrepareFailover before it
  commits a failover, which is refused during a hold and, once granted,
  refuses further confirmations. So a replica is either promoted or confirms
  the old primary, never both, and by the time a hold has lapsed the old
  primary's deadline (2/3 TTL after the round it got from that confirmation)
  has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from cygnet.agent import lease
from cygnet.agent.host import Host
from cygnet.agent.replica_source import REPLICA_API, host_of, parse_addresses
from cygnet.agent.transfer import Peers
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.backup.fsutil import atomic_write
from cygnet.errors import FailedPrecondition

log = logging.getLogger("cygnet.agent.lease")

HOLDS_FILE = "failsafe-holds.json"  # in run_dir: CLOCK_BOOTTIME, gone with a reboot
MAX_SECONDS = 300.0  # a hold or window asked for longer is cut to this


@dataclass
class Hold:
    primary_host: str = ""
    confirmed_until: int = 0  # ns, CLOCK_BOOTTIME: no promotion before
    failing_over_until: int = 0  # ns: no confirmation before (unless promoted)


class Holds:
    """The replica side, per database, kept in run_dir so that a restarted agent
    still refuses what it refused before."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / HOLDS_FILE
        self.holds = self._load()

    def _load(self) -> dict[str, Hold]:
        try:
            data = json.loads(self.path.read_text())
            if data.get("boot") != lease.boot_id():
                return {}
            return {db: Hold(*h) for db, h in data.get("holds", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def _save(self, now: int) -> None:
        live = {db: [h.primary_host, h.confirmed_until, h.failing_over_until]
                for db, h in self.holds.items() if max(h.confirmed_until,
                                                       h.failing_over_until) > now}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"boot": lease.boot_id(), "holds": live})
        atomic_write(self.path, [text.encode()], self.path.parent)

    def confirm(self, database_id: str, primary_host: str, seconds: float, now: int) -> None:
        """The primary on `primary_host` is alive: no promotion for `seconds`."""
        hold = self.holds.setdefault(database_id, Hold())
        if hold.failing_over_until > now:
            raise FailedPrecondition(
                f"database {database_id}: a failover to this replica is under way; the "
                f"primary on {primary_host} is not confirmed")
        hold.primary_host = primary_host
        hold.confirmed_until = max(hold.confirmed_until,
                                   now + int(min(seconds, MAX_SECONDS) * 1e9))
        self._save(now)

    def prepare_failover(self, database_id: str, seconds: float, now: int) -> None:
        """A failover may promote this replica: refused while its primary is confirmed;
        granted, no confirmation for `seconds` (or until the promotion)."""
        hold = self.holds.setdefault(database_id, Hold())
        if hold.confirmed_until > now:
            left = (hold.confirmed_until - now) / 1e9
            raise FailedPrecondition(
                f"database {database_id}: the primary on {hold.primary_host} confirmed "
                f"itself here (failsafe) and holds off a failover for {left:.1f}s more")
        hold.failing_over_until = max(hold.failing_over_until,
                                      now + int(min(seconds, MAX_SECONDS) * 1e9))
        self._save(now)

    def promoted(self, database_id: str) -> None:
        """This copy is the primary now: it confirms no other."""
        if self.holds.pop(database_id, None) is not None:
            self._save(lease.now_ns())


@dataclass
class Primaries:
    """This host's replicated primaries, by what a round does with them."""

    # Database id -> the hosts of its replica slots: running unfenced (what a lapsed
    # lease fences); and fenced (what all their replicas' confirmation lifts).
    running: dict[str, list[str]]
    fenced: dict[str, list[str]]
    # Found down, unfenced (with their replicas' hosts): started again by the
    # supervisor, they would write under a lease renewed for the others.
    down: dict[str, list[str]]


def replicated_primaries(host: Host) -> Primaries:
    found = Primaries({}, {}, {})
    for db in list(host.known.values()):
        main = db.main
        if main is None:
            continue
        pgdata = host.clusters.pgdata(main)
        if lease.fence_file(host.config, pgdata) is None:
            continue
        slots = sorted(host_of(s) for s in lease.replica_slots(pgdata))
        if not slots:
            continue
        if lease.fenced(pgdata):
            found.fenced[db.id] = slots
        elif host.clusters.live(main) is None:
            found.down[db.id] = slots
        else:
            found.running[db.id] = slots
    return found


class Failsafe:
    """The primary side: confirm rounds while no coordinator renews the lease."""

    def __init__(self, host: Host, host_lease: lease.HostLease, peers: Peers) -> None:
        self.host, self.lease, self.peers = host, host_lease, peers
        self.active = False  # the last round renewed the lease
        self.renewed_to = 0  # the deadline it wrote (ns)
        self.lifting: asyncio.Task[None] | None = None  # fences being lifted (_lift)
        self.lifted: set[str] = set()  # the databases that task lifts

    def due(self) -> bool:
        """A renewal is late: heartbeats renew every TTL/3 to a deadline 2/3 TTL ahead,
        so the deadline is never nearer than TTL/3 while they come. Due at TTL/4: a
        beat missed by TTL/12, with TTL/4 left for the round."""
        ttl = self.lease.ttl
        if ttl <= 0:
            return False
        left = lease.read_deadline(self.lease.path) - lease.now_ns()
        return left <= ttl / 4 * 1e9

    async def round(self) -> bool:
        """Asks every replica's host. All confirm: the host's lease is renewed. Some
        databases confirmed by all their replicas: only their own deadlines are
        (the others fence at the lease deadline). A fenced primary (its deadline passed
        while this cygnetd restarted, say) that all its replicas confirm writes again.
        True if anything was renewed."""
        found = replicated_primaries(self.host)
        # A main whose fence is being lifted is down while it restarts: asked as a
        # running one, or its own deadline (the lift's) would lapse just after its
        # start, and fence it again.
        primaries = {**found.running, **self._restarting(found)}
        self._drop_stale({**primaries, **found.fenced})
        if not primaries and not found.fenced:
            return False
        ttl, sent = self.lease.ttl, self.lease.sending()
        refused = await self._confirmations({**primaries, **found.fenced}, ttl)
        confirmed = [db for db, why in refused.items() if not why]
        self._lift([db for db in confirmed if db in found.fenced], sent, ttl)
        if primaries and all(db in confirmed for db in primaries) and not found.down:
            self.lease.renewed(sent, ttl)
            self.renewed_to = lease.deadline_for(sent, ttl)
            if not self.active:
                log.warning("failsafe: no coordinator renews this host's lease; every replica "
                            "of its %d replicated primar(ies) confirmed them, so they keep "
                            "writing", len(primaries))
            self.active = True
            return True
        self.active = False
        unconfirmed = [db for db in primaries if refused[db]]
        if unconfirmed or found.down:
            log.warning("failsafe: %s not confirmed (%s); they fence at the lease deadline%s",
                        ", ".join(unconfirmed + [f"{db} (down)" for db in found.down]),
                        "; ".join(why for db in unconfirmed for why in refused[db]) or
                        "a primary that is down is confirmed by no one",
                        f", while {', '.join(confirmed)} keep writing" if confirmed else "")
        for db_id in confirmed:  # each database's own deadline, as the lease's would be
            lease.extend(lease.failsafe_path(self.host.config, db_id), sent, ttl)
        return bool(confirmed)

    async def _confirmations(self, primaries: dict[str, list[str]], ttl: float
                             ) -> dict[str, list[str]]:
        """Database id -> why its replicas did not all confirm ([] if they did)."""
        asks: dict[str, list[Awaitable[str]]] = {}
        for db_id, hosts in primaries.items():
            addresses = await self._addresses(db_id)
            asks[db_id] = [self._ask(db_id, h, addresses.get(h, ""), ttl) for h in hosts]
        answers = dict(zip(asks, await asyncio.gather(
            *(asyncio.gather(*calls) for calls in asks.values())), strict=True))
        return {db: [a for a in said if a] for db, said in answers.items()}

    def _restarting(self, found: Primaries) -> dict[str, list[str]]:
        """Databases found down because the lift in progress restarts their main; they
        leave `found.down`."""
        if self.lifting is None or self.lifting.done():
            return {}
        return {db: found.down.pop(db) for db in list(found.down) if db in self.lifted}

    def _lift(self, database_ids: list[str], sent: int, ttl: float) -> None:
        """Fenced primaries every replica of which confirmed: their own deadline first
        (the host's lease may have lapsed), then the fence goes and main restarts, in
        a task: the rounds go on meanwhile, or the others' deadlines would lapse."""
        if not database_ids or (self.lifting is not None and not self.lifting.done()):
            return
        for db_id in database_ids:
            lease.extend(lease.failsafe_path(self.host.config, db_id), sent, ttl)
        log.warning("failsafe: every replica of %s confirmed it while no coordinator "
                    "answers; its fence is lifted", ", ".join(database_ids))
        self.lifted = set(database_ids)
        self.lifting = asyncio.create_task(self._lift_now(database_ids))

    async def _lift_now(self, database_ids: list[str]) -> None:
        try:
            await lease.lift_fences(self.host, database_ids, by="every replica")
        except Exception:
            log.exception("failsafe: lifting the fence of %s failed", ", ".join(database_ids))

    def _drop_stale(self, primaries: dict[str, list[str]]) -> None:
        """Deadlines of databases this host no longer runs as replicated primaries."""
        folder = self.host.config.run_dir / lease.FAILSAFE_DIR
        with contextlib.suppress(OSError):
            for path in folder.iterdir():
                if path.name not in primaries and lease.read_deadline(path) < lease.now_ns():
                    path.unlink(missing_ok=True)

    async def _addresses(self, db_id: str) -> dict[str, str]:
        db = self.host.known.get(db_id)
        if db is None:
            return {}
        props = await self.host.zfs.get_props(db.dataset, [REPLICA_API])
        return parse_addresses(props[db.dataset].user.get(REPLICA_API, ""))

    async def _ask(self, db_id: str, host_id: str, address: str, ttl: float) -> str:
        """'' once `host_id` confirmed, else why not."""
        if not address:
            return f"{host_id}: its address is unknown"
        try:
            resp = await self.peers.stub(address).ConfirmPrimary(
                pb.ConfirmPrimaryRequest(database=db_id, hold_seconds=ttl),
                timeout=max(0.2, ttl / 8))
        except aio.AioRpcError as exc:
            return f"{host_id}: {exc.code().name} {exc.details()}"
        except Exception as exc:
            return f"{host_id}: {exc}"
        if resp.host_id != host_id:
            return f"{host_id}: answered as {resp.host_id!r}"
        return ""

    async def run(self, stop: asyncio.Event) -> None:
        """A round whenever the lease is due (checked every TTL/12)."""
        while not stop.is_set():
            if self.due():
                try:
                    await self.round()
                except Exception:
                    log.exception("failsafe round failed")
            elif self.active and lease.read_deadline(self.lease.path) > self.renewed_to:
                log.warning("failsafe: a coordinator renews this host's lease again")
                self.active = False
            wait = self.lease.ttl / 12 if self.lease.ttl > 0 else 1.0
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except TimeoutError:
                continue
        if self.lifting is not None:  # a main half restarted would wait for the supervisor
            await self.lifting

