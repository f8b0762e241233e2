"""WAL archiving logic on real files: the choice of segments by LSN range along the
ancestry, the recoverable window, the spool's ingestion and its lag metrics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cygnet.agent.archive import Archiver
from cygnet.agent.config import AgentConfig
from cygnet.wal import spool
from cygnet.wal.lsn import SEGMENT_SIZE, format_lsn, parse_lsn, segment, segment_name
from cygnet.wal.plan import load_chain, owner, selection, window, write_sparse
from cygnet.wal.points import WalPoint
from cygnet.wal.repo import Generation, WalConflict, WalRepository

S = SEGMENT_SIZE


def gen(branch: str, n: int, start: int, base: tuple[str, int] | None = None,
        start_time: float = 0.0) -> Generation:
    b, g = base or ("", 0)
    return Generation(branch, n, start, b, g, "db", "shop", branch, 0.0, start_time)


def put(repo: WalRepository, branch: str, n: int, number: int, body: bytes, mtime: float,
        timeline: int = 1) -> str:
    name = segment_name(timeline, number * S)
    repo.store(branch, n, name, body, mtime)
    return name


def test_lsns_and_segment_names() -> None:
    assert parse_lsn("0/3000060") == 0x3000060 and format_lsn(0x103000060) == "1/3000060"
    seg = segment("000000020000000100000003")
    assert seg is not None and seg.timeline == 2 and seg.start == (0x100 + 3) * S
    assert segment("00000002.history") is None
    point = WalPoint(5, 9, 12.5)
    assert WalPoint.parse(point.text()) == point and WalPoint.parse("garbage") is None


def test_segments_by_lsn_range_never_by_name(tmp_path: Path) -> None:
    repo = WalRepository(tmp_path)
    fork = 5 * S + 0x100  # the child forked inside segment 5
    repo.begin(gen("main", 1, 0))
    for n in range(3, 8):  # main goes on past the fork, under the same names
        put(repo, "main", 1, n, b"main%d" % n, 10.0 * n)
    put(repo, "child", 1, 6, b"child6", 80.0)
    chain = load_chain(repo, gen("child", 1, fork, ("main", 1), start_time=45.0))
    bodies = {o.name: WalRepository.read(o.path) for o in selection(chain, 3 * S)}
    assert bodies == {segment_name(1, 3 * S): b"main3", segment_name(1, 4 * S): b"main4",
                      # straddles the fork: shared WAL below it, the child never archived it
                      segment_name(1, 5 * S): b"main5",
                      segment_name(1, 6 * S): b"child6"}  # never main's copy of 6 or 7
    assert owner(chain, segment_name(1, 7 * S)) is None
    # Main's copy of segment 5 holds main's WAL past the fork: the window ends at the
    # fork (and its time) until the child's own copy of segment 5 is archived.
    assert window(chain, 3 * S) == window(chain, 3 * S + 10)
    assert window(chain, 3 * S).end_lsn == fork and window(chain, 3 * S).end_time == 45.0
    put(repo, "child", 1, 5, b"child5", 75.0)
    chain = load_chain(repo, chain[0].generation)
    assert window(chain, 3 * S).end_lsn == 7 * S and window(chain, 3 * S).end_time == 80.0


def test_a_rewind_shadows_the_names_it_rewrites(tmp_path: Path) -> None:
    repo = WalRepository(tmp_path)
    repo.begin(gen("main", 1, 0))
    for n in (1, 2, 3):
        put(repo, "main", 1, n, b"old%d" % n, float(n))
    repo.begin(gen("main", 2, 2 * S + 10, ("main", 1), start_time=2.5))
    put(repo, "main", 2, 2, b"new2", 10.0)
    put(repo, "main", 2, 3, b"new3", 11.0)
    chain = load_chain(repo, repo.generation("main", 2))  # type: ignore[arg-type]
    got = [WalRepository.read(o.path) for o in selection(chain, S)]
    assert got == [b"old1", b"new2", b"new3"]


def test_repository_objects_are_immutable(tmp_path: Path) -> None:
    repo = WalRepository(tmp_path)
    name = put(repo, "b", 1, 1, b"x" * 1000, 5.0)
    assert not repo.store("b", 1, name, b"x" * 1000, 6.0)  # the same file again: fine
    with pytest.raises(WalConflict):
        repo.store("b", 1, name, b"y" * 1000, 6.0)
    assert WalRepository.read(repo.objects("b", 1)[name].path) == b"x" * 1000


def test_ingest_moves_the_spool_and_reports_its_lag(tmp_path: Path) -> None:
    config = AgentConfig(pools=("p",), state_dir=tmp_path, wal_spool_max_bytes=4 << 20)
    archiver = Archiver(config)
    d = spool.spool_dir(archiver.root, "br1", 1)
    d.mkdir(parents=True)
    (d / segment_name(1, S)).write_bytes(os.urandom(1 << 20))
    os.utime(d / segment_name(1, S), (1.0, 1.0))
    metrics = {m.name: m for m in archiver.metrics()}
    lag = metrics["cygnet_wal_archive_lag_bytes"].samples[0]
    assert lag.labels == {"branch_id": "br1"} and lag.value == 1 << 20
    assert metrics["cygnet_wal_spool_fill_ratio"].samples[0].value == 0.25
    assert metrics["cygnet_wal_archive_lag_seconds"].samples[0].value > 1000
    assert spool.ingest(archiver.root, archiver.repo) == 1
    assert list(d.iterdir()) == []
    obj = archiver.repo.objects("br1", 1)[segment_name(1, S)]
    assert obj.mtime == 1.0  # the time of the WAL's last write, kept
    assert not {m.name: m for m in archiver.metrics()}["cygnet_wal_archive_lag_bytes"].samples


def test_archive_and_recovery_settings_render_quoted() -> None:
    from cygnet.postgres.config import (
        ArchiveSettings,
        ClusterSettings,
        RecoverySettings,
        render_settings,
    )
    from cygnet.postgres.sizes import size_class

    base = ClusterSettings(port=5432, listen_addresses="127.0.0.1", socket_dir=Path("/run/x"),
                           size=size_class("small"))
    assert "archive_mode = off" in render_settings(base).splitlines()
    # ZFS cannot tear a page: no full-page images, whether archiving or not.
    assert "full_page_writes = off" in render_settings(base).splitlines()
    # Nor does it gain from recycled or zero-filled segments, archiving or not.
    assert {"wal_recycle = off", "wal_init_zero = off"} <= set(render_settings(base).splitlines())
    text = render_settings(ClusterSettings(
        **{**base.__dict__, "archive": ArchiveSettings("'/b/cygnet-wal' archive '%p'", 2),
           "recovery": RecoverySettings("'/b/cygnet-wal' restore '%f' '%p'",
                                        target_lsn="0/3000060")}))
    lines = text.splitlines()
    assert "archive_command = '''/b/cygnet-wal'' archive ''%p'''" in lines
    assert {"archive_mode = on", "archive_timeout = 2", "wal_recycle = off",
            "wal_compression = lz4", "hot_standby = on", "recovery_target_lsn = '0/3000060'",
            "recovery_target_action = 'pause'"} <= set(lines)
    # A deeper look-ahead for the replay's page reads, from the major that has it on.
    assert "maintenance_io_concurrency = 64" not in lines  # major unknown
    fifteen = render_settings(ClusterSettings(**{**base.__dict__, "major": 15,
                                                 "recovery": RecoverySettings("x")}))
    assert {"maintenance_io_concurrency = 64",
            "wal_decode_buffer_size = 2MB"} <= set(fifteen.splitlines())


def test_staged_files_reach_the_restore_program_in_order(tmp_path: Path) -> None:
    import subprocess
    import threading

    from cygnet.agent.archive import PROGRAM
    from cygnet.wal.plan import Stager

    repo = WalRepository(tmp_path / "repo")
    repo.begin(gen("main", 1, 0))
    bodies = {put(repo, "main", 1, n, os.urandom(1 << 20), float(n)): n for n in range(1, 6)}
    chain = load_chain(repo, gen("main", 1, 0))
    stager = Stager(tmp_path / "stage", selection(chain, 0), os.getuid(), os.getgid())
    stager.prepare()
    worker = threading.Thread(target=stager.run)
    worker.start()
    dest = tmp_path / "RECOVERYXLOG"
    for name in bodies:  # as Postgres asks: one after another, waiting for each
        done = subprocess.run([str(PROGRAM), "restore", str(stager.directory), name, str(dest)])
        assert done.returncode == 0
        assert dest.read_bytes() == WalRepository.read(repo.objects("main", 1)[name].path)
    worker.join(30)
    assert stager.error is None and stager.staged == 5 and stager.staged_bytes == 5 << 20
    outside = segment_name(1, 9 * S)
    assert subprocess.run([str(PROGRAM), "restore", str(stager.directory), outside,
                           str(dest)]).returncode == 1


def test_a_switched_segment_is_staged_with_its_zeros_as_a_hole(tmp_path: Path) -> None:
    data = b"record" * 1000 + bytes(16 * 2**20 - 6000)
    path = tmp_path / "000000010000000000000001"
    write_sparse(path, data)
    assert path.read_bytes() == data
    assert path.stat().st_blocks * 512 < 1 << 20  # the 16 MiB tail takes no blocks
    write_sparse(path, bytes(100))  # all zeros: all hole, same length
    assert path.read_bytes() == bytes(100)
