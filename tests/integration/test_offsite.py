"""The off-host repository against a real S3-compatible store (SeaweedFS on loopback).

A backup on one cygnetd goes to the bucket encrypted, and a second cygnetd (its
own pool and state, never having seen the database) lists and restores it;
a damaged object is refused with DATA_LOSS naming it; bad settings get errors
naming them; the store killed mid-upload and started again costs nothing.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from botocore.exceptions import ClientError

from cygnet import backup
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import backup_pb2 as bpb
from cygnet.backup import CorruptRepository, manifest, pruned
from cygnet.backup.repo import Repository
from cygnet.offsite import fetch, sync
from cygnet.offsite.config import OffsiteConfig
from cygnet.offsite.crypto import Keyring
from cygnet.offsite.store import ObjectStore, OffsiteRefused, OffsiteUnreachable
from cygnet.offsite.sync import Uploader, upload_order
from cygnet.wal.repo import Generation, WalRepository
from tests.harness import VENV_BIN, WORK, Daemon, free_port, private_daemon, query
from tests.integration.backup_helpers import backups, create_backup, rpc_error, run_stream
from tests.integration.test_cli_support import assert_one_error_line, cygnet
from tests.integration.test_metrics import promtool_check_metrics
from tests.s3_helpers import KEY, Seaweed, seaweed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store() -> Iterator[Seaweed]:
    with seaweed() as s:
        yield s


def offsite_config(s: Seaweed, host: str = "h1", **changes: object) -> OffsiteConfig:
    keyring = Keyring.from_settings("k1", {"k1": base64.b64encode(KEY).decode()})
    config = OffsiteConfig(endpoint=s.endpoint, bucket=s.bucket, host=host, keyring=keyring,
                           access_key_id=s.access_key, secret_access_key=s.secret_key,
                           retry_for=60.0)
    return replace(config, **changes).check()  # type: ignore[arg-type]


def wait_remote(d: Daemon, backup_id: str, timeout: float = 60.0) -> bpb.Backup:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = backups(d).ListBackups(bpb.ListBackupsRequest(remote=True), timeout=30)
        found: list[bpb.Backup] = [b for b in listing.backups if b.id == backup_id]
        if found:
            return found[0]
        time.sleep(0.3)
    raise AssertionError(f"{backup_id} never reached the bucket:\n{d.tail()}")


def remote_restore(d: Daemon, backup_id: str, name: str) -> bpb.RestoreBackupResponse:
    req = bpb.RestoreBackupRequest(backup_id=backup_id, database_name=name, remote=True)
    _, result = run_stream(backups(d).RestoreBackup(req, timeout=300))
    return result  # type: ignore[no-any-return]


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    assert values, f"{name} is not exported"
    return float(values[0])


def test_backup_offsite_encrypted_and_restored_on_a_host_that_never_saw_it(
        store: Seaweed) -> None:
    sentinel = "offsite-sentinel-" + os.urandom(4).hex()
    backup_id, local, log_a = _backed_up_offsite_from_host_a(store, sentinel)
    # Only ciphertext in the bucket: the sentinel is in the local manifest's header,
    # in no object of the bucket.
    assert sentinel.encode() in local
    objects = store.objects()
    assert any("/packs/" in k for k in objects) and any(k.endswith(".manifest") for k in objects)
    assert not [k for k, v in objects.items() if sentinel.encode() in v]
    # Object lock: each upload is retained, and SeaweedFS refuses to delete it.
    s3 = store.client()
    pack = next(k for k in objects if k.endswith(".pack"))
    assert s3.head_object(Bucket=store.bucket, Key=pack)["ObjectLockMode"] == "COMPLIANCE"
    version = s3.list_object_versions(Bucket=store.bucket, Prefix=pack)["Versions"][0]
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=store.bucket, Key=pack, VersionId=version["VersionId"])
    log_b, refusal = _restored_on_host_b(store, sentinel, backup_id, (pack, objects[pack]))
    for text in (log_a, log_b, refusal):
        assert store.secret_key not in text and store.access_key not in text
        assert base64.b64encode(KEY).decode() not in text


def _backed_up_offsite_from_host_a(store: Seaweed, sentinel: str) -> tuple[str, bytes, str]:
    """A backup and archived WAL of a database holding `sentinel`, uploaded by host-a;
    its metrics settle and no credential shows in `ps`. Returns the backup's id,
    host-a's local manifests, and its log."""
    metrics_port = free_port()
    settings_a = store.settings(host_id="host-a", offsite_interval=0.5, metrics_interval=0.5,
                                metrics_listen=f"127.0.0.1:{metrics_port}", offsite_lock_days=1)
    with private_daemon("oa", 57000, "2G", settings=settings_a) as a:
        with a.stub() as s:
            db = s.CreateDatabase(pb.CreateDatabaseRequest(name=sentinel), timeout=120)
        query(db.connection, f"create table t (v text); insert into t values ('{sentinel}')")
        query(db.connection, "select pg_switch_wal()")  # a finished segment to archive
        made = create_backup(a, pb.BranchRef(database=sentinel))
        seen = wait_remote(a, made.id)
        # Archived WAL follows: Postgres -> spool -> repository -> bucket.
        s3 = store.client()
        wal_prefix = f"hosts/host-a/wal/{db.main_branch.id}/"
        deadline = time.monotonic() + 60
        while not s3.list_objects_v2(Bucket=store.bucket, Prefix=wal_prefix).get("KeyCount"):
            assert time.monotonic() < deadline, f"no WAL off-host:\n{a.tail()}"
            time.sleep(0.3)
        assert seen.host == "host-a" and seen.database_name == sentinel
        deadline = time.monotonic() + 30
        while metric(metrics_port, "cygnet_offsite_pending_bytes") and time.monotonic() < deadline:
            time.sleep(0.3)
        assert metric(metrics_port, "cygnet_offsite_pending_bytes") == 0
        assert metric(metrics_port, "cygnet_offsite_uploaded_bytes_total") > 0
        assert metric(metrics_port, "cygnet_offsite_up") == 1
        promtool_check_metrics(urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode())
        local = b"".join(p.read_bytes() for p in (a.base / "state/backups/backups").iterdir())
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert store.secret_key not in ps and store.access_key not in ps
        return made.id, local, a.log_path.read_text()


def _restored_on_host_b(store: Seaweed, sentinel: str, backup_id: str,
                        pack: tuple[str, bytes]) -> tuple[str, str]:
    """host-b lists host-a's backup, refuses a damaged pack (DATA_LOSS, nothing made)
    and restores the good one. Returns host-b's log and the refusal's message."""
    key, good = pack
    with private_daemon("ob", 57300, "2G", settings=store.settings(host_id="host-b")) as b:
        listing = backups(b).ListBackups(bpb.ListBackupsRequest(remote=True, database=sentinel),
                                         timeout=30)
        assert [(x.id, x.host) for x in listing.backups] == [(backup_id, "host-a")]
        shown = json.loads(cygnet(b, "backup", "list", "--remote", "--json").out)
        assert [(x["id"], x["host"], x["database_name"]) for x in shown] == [
            (backup_id, "host-a", sentinel)]
        assert "host-a" in cygnet(b, "backup", "list", "--remote", sentinel).out
        # A damaged pack in the bucket: DATA_LOSS naming it, and no database is left.
        damaged = bytearray(good)
        damaged[len(damaged) // 2] ^= 0xFF
        store.client().put_object(Bucket=store.bucket, Key=key, Body=bytes(damaged))
        err = rpc_error(lambda: remote_restore(b, backup_id, "copy-bad"))
        assert err.code() == grpc.StatusCode.DATA_LOSS, err.details()
        assert key in err.details()
        with b.stub() as s:
            names = [d.name for d in s.ListDatabases(pb.ListDatabasesRequest(), timeout=30)
                     .databases]
        assert "copy-bad" not in names
        # The good copy back (with object lock, the damaged one was only a new version).
        store.client().put_object(Bucket=store.bucket, Key=key, Body=good)
        done = remote_restore(b, backup_id, "copy")
        assert query(done.connection, "select v from t") == [(sentinel,)]
        return b.log_path.read_text(), str(err.details())


def test_credentials_from_the_environment(store: Seaweed,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store.secret_key)
    ObjectStore(offsite_config(store, access_key_id="", secret_access_key="")).check()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + store.secret_key)
    with pytest.raises(OffsiteRefused, match=r"^offsite_secret_access_key:"):
        ObjectStore(offsite_config(store, access_key_id="", secret_access_key="")).check()


def test_bad_settings_name_the_setting(store: Seaweed, tmp_path: Path) -> None:
    cases = [
        (offsite_config(store, bucket="no-such-bucket-here"), "offsite_bucket"),
        (offsite_config(store, secret_access_key="wrong-" + store.secret_key[:6]),
         "offsite_secret_access_key"),
        (offsite_config(store, access_key_id="AKNOBODY"), "offsite_access_key_id"),
        (offsite_config(store, endpoint=f"http://127.0.0.1:{free_port()}"), "offsite_endpoint"),
    ]
    for config, setting in cases:
        with pytest.raises((OffsiteRefused, OffsiteUnreachable)) as caught:
            ObjectStore(config).check()
        message = str(caught.value)
        assert message.startswith(setting + ":"), message
        assert store.secret_key not in message and store.access_key not in message
    # cygnetd refuses to start on a bad key, naming the setting and not the value.
    bad = store.settings().replace(base64.b64encode(KEY).decode(), "c2hvcnQ=")
    (tmp_path / "bad.toml").write_text(bad)
    run = subprocess.run([str(VENV_BIN / "cygnetd"), "--pool", "nopool", "--listen", "",
                          "--config", str(tmp_path / "bad.toml"),
                          "--state-dir", str(tmp_path / "state"), "--run-dir",
                          str(tmp_path / "run")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "offsite_keys" in run.stderr, run.stderr
    assert "c2hvcnQ=" not in run.stderr and store.secret_key not in run.stderr


def _repository(where: Path, megabytes: int) -> tuple[Path, str, Path]:
    """A repository with one backup of random data, and an archived WAL object."""
    src = where / "src"
    src.mkdir()
    (src / "data").write_bytes(os.urandom(megabytes << 20))
    repo = where / "repo"
    info = backup.create_backup(repo, src, {"database": "killed"})
    wal = repo / "wal" / "br_x" / "g1"
    wal.mkdir(parents=True)
    (wal / "000000010000000000000001.zst").write_bytes(os.urandom(1 << 20))
    return repo, info.backup_id, src


def _objects(repo: Path) -> dict[Path, int]:
    """The repository's files, but for the prune journal's own (backup/pruned.py)."""
    return {p: p.stat().st_size for p in repo.rglob("*")
            if p.is_file() and not p.name.startswith(pruned.JOURNAL)}


def test_store_killed_mid_upload_then_back(tmp_path: Path) -> None:
    repo, backup_id, src = _repository(tmp_path, 40)
    before = _objects(repo)
    weed = Seaweed(WORK / ("s3k-" + os.urandom(3).hex()))
    weed.start()
    try:
        weed.make_bucket()
        config = offsite_config(weed, concurrency=1, part_chunks=5)
        uploader = Uploader(ObjectStore(config), repo)
        uploader.start()
        total = len(uploader.pending())
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(uploader.run_pass)
            while uploader.status.uploaded_objects < 1 and not running.done():
                time.sleep(0.005)
            weed.kill9()
            at_kill = uploader.status.uploaded_objects
            restart = threading.Timer(2.0, weed.start)
            restart.start()
            sent = running.result(timeout=120)
            restart.join()
        assert at_kill < total  # it was killed in the middle of the pass
        assert sent > 0 and not uploader.pending()
        assert _objects(repo) == before
        # What the bucket holds restores to the very bytes.
        store = ObjectStore(config)
        assert [h for h, _ in fetch.list_remote(store, config.keyring)] == ["h1"]
        cache = fetch.fetch_backup(store, config.keyring, "h1", backup_id, tmp_path / "cache")
        backup.restore(cache, backup_id, tmp_path / "out")
        assert (tmp_path / "out" / "data").read_bytes() == (src / "data").read_bytes()
        assert list(fetch.list_objects(store, "h1", "wal/")) == [
            "wal/br_x/g1/000000010000000000000001.zst"]
        wal = fetch.fetch_objects(store, config.keyring, "h1",
                                  ["wal/br_x/g1/000000010000000000000001.zst"], tmp_path / "w")
        assert wal[0].read_bytes() == (repo / "wal/br_x/g1/000000010000000000000001.zst"
                                       ).read_bytes()
    finally:
        weed.stop()


def test_fetch_refuses_a_damaged_or_foreign_object(store: Seaweed, tmp_path: Path) -> None:
    repo, backup_id, _ = _repository(tmp_path, 1)
    config = offsite_config(store, host="h-damaged")
    uploader = Uploader(ObjectStore(config), repo)
    uploader.start()
    uploader.run_pass()
    s3 = store.client()
    key = f"hosts/h-damaged/backups/{backup_id}.manifest"
    # An object put under another name (a replay) fails its authentication too.
    other = s3.get_object(Bucket=store.bucket, Key="hosts/h-damaged/cygnet-backup.json")
    s3.put_object(Bucket=store.bucket, Key=key, Body=other["Body"].read())
    with pytest.raises(CorruptRepository) as caught:
        fetch.fetch_backup(ObjectStore(config), config.keyring, "h-damaged", backup_id,
                           tmp_path / "cache")
    assert key in str(caught.value) + "".join(caught.value.problems)
    assert not (tmp_path / "cache" / "backups" / f"{backup_id}.manifest").exists()


def test_remote_listing_without_an_off_host_repository_names_the_setting(daemon: Daemon) -> None:
    result = cygnet(daemon, "backup", "list", "--remote", expect=None)
    assert result.code != 0
    assert_one_error_line(result, "offsite_endpoint")


def test_a_delta_manifest_goes_after_its_base_and_restores(
        store: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, first, src = _repository(tmp_path, 2)
    with open(src / "data", "r+b") as f:
        f.write(b"changed")
    second = backup.create_backup(repo, src, {"database": "delta"}).backup_id
    assert manifest.read_header(Repository(repo), second)[1] == first  # stored as a delta
    config = offsite_config(store, host="h-delta")
    uploader = Uploader(ObjectStore(config), repo)
    uploader.start()
    order = [o.rel for o in upload_order(repo, uploader.pending())]
    assert order.index(f"backups/{first}.manifest") < order.index(f"backups/{second}.manifest")
    uploader.run_pass()
    assert not uploader.pending()
    rewritten = repo / "backups" / f"{second}.manifest"  # as prune re-encodes one
    os.utime(rewritten, (time.time() + 5, time.time() + 5))
    assert [o.rel for o in uploader.pending()] == [f"backups/{second}.manifest"]
    uploader.run_pass()
    # A stopping daemon ends passes early; what is left waits for the next start.
    uploader.cancel()
    os.utime(rewritten, (time.time() + 9, time.time() + 9))
    assert uploader.run_pass() == 0 and len(uploader.pending()) == 1
    cache = fetch.fetch_backup(ObjectStore(config), config.keyring, "h-delta", second,
                               tmp_path / "cache")
    backup.restore(cache, second, tmp_path / "out")
    assert (tmp_path / "out" / "data").read_bytes() == (src / "data").read_bytes()
    # An object gone from the bucket (a lifecycle rule) is seen at the next listing.
    store.client().delete_object(Bucket=store.bucket, Key=f"hosts/h-delta/backups/{first}.manifest")
    assert len(uploader.pending()) == 1  # listed a moment ago: not yet seen
    monkeypatch.setattr(sync, "RELIST", 0.0)
    assert {o.rel for o in uploader.pending()} == {f"backups/{first}.manifest",
                                                  f"backups/{second}.manifest"}


WRITTEN = 1_700_000_000.25  # a segment's last write, long before the test


def test_a_branchs_wal_comes_back_with_its_ancestors(store: Seaweed, tmp_path: Path) -> None:
    repo = backup.init_repository(tmp_path / "repo").root
    wal = WalRepository(repo)
    segments = {}
    for branch, base in (("br_main", ""), ("br_child", "br_main"), ("br_other", "")):
        wal.begin(Generation(branch, 1, 0, base, 1 if base else 0, "db_1", "shop",
                             branch, time.time()))
        segments[branch] = os.urandom(64 << 10)
        wal.store(branch, 1, "000000010000000000000001", segments[branch], WRITTEN)
    config = offsite_config(store, host="h-wal")
    uploader = Uploader(ObjectStore(config), repo)
    uploader.start()
    uploader.run_pass()
    local = tmp_path / "elsewhere"
    got = fetch.fetch_wal(ObjectStore(config), config.keyring, "h-wal", "br_child", local)
    assert got == ["br_child", "br_main"]
    back = WalRepository(local)
    assert [g.key for g in back.chain("br_child", 1)] == [("br_child", 1), ("br_main", 1)]
    for branch in got:
        obj = back.objects(branch, 1)["000000010000000000000001"]
        assert WalRepository.read(obj.path) == segments[branch]
        # When it was written, not when it was fetched: it bounds a time target.
        assert obj.mtime == pytest.approx(WRITTEN, abs=0.01)
    assert back.generations("br_other") == []  # not its ancestor: not fetched


def test_wal_goes_up_while_a_long_pass_holds_the_main_lane(store: Seaweed, tmp_path: Path
                                                           ) -> None:
    repo = backup.init_repository(tmp_path / "repo").root
    wal = WalRepository(repo)
    wal.begin(Generation("br_main", 1, 0, "", 0, "db_1", "shop", "main", time.time()))
    segment = os.urandom(64 << 10)
    wal.store("br_main", 1, "000000010000000000000001", segment, time.time())
    config = offsite_config(store, host="h-lane")
    uploader = Uploader(ObjectStore(config), repo)
    uploader.start()
    with uploader._guard:  # what a pass uploading a large backup holds meanwhile
        assert uploader.run_wal_pass() > len(segment) - 1  # its object: the segment, framed
    keys = [o["Key"] for o in store.client().list_objects_v2(
        Bucket=store.bucket, Prefix="hosts/h-lane/wal/").get("Contents", [])]
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == [
        "000000010000000000000001.zst", "generation.json"]
    assert uploader.run_wal_pass() == 0  # nothing left for the WAL lane
    uploader.run_pass()  # the rest (the repository's format file), not the WAL again
    assert uploader.status.uploaded_objects == 3 and uploader.pending() == []
