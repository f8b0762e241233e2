"""Events: WatchEvents replays from a cursor then streams; the journal on the pool
survives restarts and a torn line, is trimmed to its bound, and feeds signed webhooks."""

from __future__ import annotations

import http.server
import json
import queue
import secrets
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import grpc
import pytest

from cygnet.agent.webhooks import verify
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import unique
from tests.harness import Daemon, free_port, private_daemon


def follow(stub: pb_grpc.AgentStub, req: pb.WatchEventsRequest
           ) -> tuple[queue.Queue[pb.Event], grpc.Future]:
    """A live stream read by a thread into a queue; cancel the returned call to end it."""
    out: queue.Queue[pb.Event] = queue.Queue()
    call = stub.WatchEvents(req, timeout=120)

    def pump() -> None:
        try:
            for event in call:
                out.put(event)
        except grpc.RpcError:
            pass

    threading.Thread(target=pump, daemon=True).start()
    return out, call


def take_until(events: queue.Queue[pb.Event], db: str, kind: str, branch: str
               ) -> list[pb.Event]:
    seen = []
    while True:
        event = events.get(timeout=60)
        if event.database_name == db:
            seen.append(event)
            if (event.kind, event.branch_name) == (kind, branch):
                return seen


def test_watch_streams_live_and_resumes_from_a_cursor(daemon: Daemon) -> None:
    db = unique()
    with daemon.stub() as stub:
        # From the newest cursor, not "from now": the stream starts when the server
        # gets to it, and the database below must not be made before that.
        kept = list(stub.WatchEvents(pb.WatchEventsRequest(from_oldest=True), timeout=30))
        start = kept[-1].cursor if kept else 0
        events, call = follow(stub, pb.WatchEventsRequest(cursor=start, from_oldest=True,
                                                          follow=True))
        try:
            stub.CreateDatabase(pb.CreateDatabaseRequest(name=db))
            branch = stub.CreateBranch(pb.CreateBranchRequest(database=db, name="pr")).branch
            stub.DeleteBranch(pb.DeleteBranchRequest(branch=pb.BranchRef(branch_id=branch.id)))
            seen = take_until(events, db, "deleted", "pr")
        finally:
            call.cancel()
        assert [(e.kind, e.branch_name) for e in seen] == [
            ("created", "main"), ("ready", "main"), ("created", "pr"), ("ready", "pr"),
            ("deleted", "pr")]
        cursors = [e.cursor for e in seen]
        assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
        assert seen[4].branch_id == branch.id and seen[4].database_id == branch.database_id
        assert seen[4].time.seconds > 0
        # A control plane that saw up to "created pr" resumes right after it.
        replay = list(stub.WatchEvents(pb.WatchEventsRequest(cursor=seen[2].cursor),
                                       timeout=30))
        assert [e.cursor for e in replay if e.database_name == db] == cursors[3:]
        with pytest.raises(grpc.RpcError) as info:
            list(stub.WatchEvents(pb.WatchEventsRequest(cursor=cursors[-1] + 10**9), timeout=30))
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE


class Receiver(http.server.BaseHTTPRequestHandler):
    """Records each POST; answers the very first one with 500, to be retried."""

    got: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    failed_once = False

    def do_POST(self) -> None:  # http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if not Receiver.failed_once:
            Receiver.failed_once = True
            self.send_response(500)
        else:
            Receiver.got.append((dict(self.headers), body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/cygnet?token=t0ps3cret"
    finally:
        server.shutdown()


def churn(stub: pb_grpc.AgentStub, count: int) -> None:
    """Four events per database: created and ready main, deleted main and the database."""
    for _ in range(count):
        name = unique()
        stub.CreateDatabase(pb.CreateDatabaseRequest(name=name))
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=name))


def wait_kept(stub: pb_grpc.AgentStub, newest: int, after: int = 0) -> list[pb.Event]:
    """The events kept (after `after`), once `newest` has been written."""
    deadline = time.monotonic() + 30
    req = pb.WatchEventsRequest(cursor=after, from_oldest=True)
    while True:
        try:
            kept = list(stub.WatchEvents(req, timeout=30))
        except grpc.RpcError as exc:
            # Trimming while the last events land can take the oldest away mid-read:
            # refused rather than skipped (agent/eventlog.py); read again.
            assert exc.code() == grpc.StatusCode.OUT_OF_RANGE, exc
            assert time.monotonic() < deadline, exc.details()
            continue
        if kept and kept[-1].cursor >= newest:
            return kept
        assert time.monotonic() < deadline, [e.cursor for e in kept]
        time.sleep(0.05)


def scrape(port: int, wanted: str) -> str:
    """The daemon's /metrics once it shows `wanted` (its gauges refresh every 0.2 s here)."""
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text: str = r.read().decode()
        if wanted in text:
            return text
        assert time.monotonic() < deadline, text[-3000:]
        time.sleep(0.2)


def segments(d: Daemon) -> list[Path]:
    return sorted((d.mount_root / d.pool.name / "events").glob("*.jsonl"))


def test_journal_restart_trim_and_webhooks(receiver: str, tmp_path: Path) -> None:
    secret = secrets.token_hex(16)
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text(secret)
    metrics = free_port()
    settings = (f"events_max = 4\nwebhook_urls = [{json.dumps(receiver)}]\n"
                f'webhook_secret_file = "{secret_file}"\n'
                f'metrics_listen = "127.0.0.1:{metrics}"\nmetrics_interval = 0.2\n')
    with private_daemon("ev", 61600, "2G", settings=settings, unix_only=True) as d:
        with d.stub() as stub:
            churn(stub, 2)  # 8 events: more than events_max
            # The last events are written just after the call that made them returns.
            kept = wait_kept(stub, 8)
            oldest, newest = kept[0].cursor, kept[-1].cursor
            assert oldest > 1 and len(kept) >= 4
            with pytest.raises(grpc.RpcError) as info:
                list(stub.WatchEvents(pb.WatchEventsRequest(cursor=1), timeout=30))
            assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert f"the oldest cursor kept is {oldest}" in info.value.details()
        # A crash mid-write leaves a torn line; the restarted daemon cuts it and
        # carries on numbering after the last whole event.
        d.stop()
        with segments(d)[-1].open("ab") as f:
            f.write(b'{"cursor":9,"time":1')
        d.start()
        with d.stub() as stub:
            churn(stub, 1)
            after = wait_kept(stub, 12, after=newest)
        assert [e.cursor for e in after] == [9, 10, 11, 12]
        assert [e.kind for e in after] == ["created", "ready", "deleted", "deleted"]
        # Every event still kept reaches the receiver, in order, the first after a
        # retry; those not sent before the restart are sent after it (at least once).
        # Events trimmed (events_max = 4) before their delivery are not sent.
        deadline = time.monotonic() + 60
        while not set(range(oldest, 13)) <= {int(h["Cygnet-Event-Cursor"])
                                             for h, _ in Receiver.got}:
            assert time.monotonic() < deadline, [h["Cygnet-Event-Cursor"] for h, _ in
                                                 Receiver.got]
            time.sleep(0.1)
        log = d.log_path.read_text()
        assert secret not in log and "t0ps3cret" not in log
        assert "attempt 1 failed (HTTP 500)" in log
        scraped = scrape(metrics, 'cygnet_events_cursor{end="newest"} 12.0')
        assert 'cygnet_webhook_delivered_total{url="http://127.0.0.1:' in scraped
        assert "t0ps3cret" not in scraped and secret not in scraped
    cursors = [int(h["Cygnet-Event-Cursor"]) for h, _ in Receiver.got]
    assert cursors == sorted(cursors)
    for headers, body in Receiver.got:
        assert verify(secret.encode(), headers["Cygnet-Signature"], body)
        assert not verify(b"another secret of 32 bytes......", headers["Cygnet-Signature"], body)
        assert json.loads(body)["cursor"] == int(headers["Cygnet-Event-Cursor"])
