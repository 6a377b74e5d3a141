"""ser-archive under faults, with real servers and the archiver as its own process (``python -m
archive.cli``): killed with SIGKILL mid-batch and restarted, PostgreSQL stopped while calls run, Redis
restarted, two archivers on one group, malformed and oversized entries. Afterwards every archived call
equals its results stream record for record, its events once each, and nothing is left unacknowledged.

The PostgreSQL outage lasts ``SER_ARCHIVE_OUTAGE_S`` seconds (default 10 in CI; the issue's two minutes:
``SER_ARCHIVE_OUTAGE_S=120 python -m pytest -q tests/test_archive_faults.py -k outage``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from archive_streams import (
    EMBEDDING,
    ArchiverProcess,
    LiveCall,
    all_differences,
    dead_rows,
    owed,
    snapshot,
    wait_archived,
    wait_for,
    write_calls,
)
from pg_server import PgServer, wait_until_up
from redis_server import RedisServer
from sqlalchemy import Engine, create_engine, text

from archive.settings import GROUP
from callevents.schema import EVENTS_KEY
from workers.contract import results_key

OUTAGE_S = float(os.environ.get("SER_ARCHIVE_OUTAGE_S", "10"))
Spawn = Callable[..., ArchiverProcess]


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def _engine(url: str) -> Iterator[Engine]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def db(pg_url: str) -> Iterator[Engine]:
    yield from _engine(pg_url)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start archiver processes; any still running at the end is killed."""
    procs: list[ArchiverProcess] = []

    def start(redis_url: str, db_url: str, *args: str, consumer: str | None = None) -> ArchiverProcess:
        proc = ArchiverProcess(redis_url, db_url, tmp_path / f"archiver-{len(procs)}.log", *args, consumer=consumer)
        procs.append(proc)
        _started(proc)
        return proc

    yield start
    for proc in procs:
        if proc.alive():
            proc.kill()
        proc.close()


def _pending(r: redis.Redis, key: str, consumer: str) -> int:
    try:
        return sum(int(c["pending"]) for c in r.xinfo_consumers(key, GROUP) if c["name"] == consumer.encode())
    except redis.ResponseError:  # no group there yet
        return 0


def _started(proc: ArchiverProcess) -> None:
    wait_for(lambda: "archiving Redis" in proc.output() or not proc.alive(), 30, "the archiver to start")
    assert proc.alive(), proc.output()


def _stopped_cleanly(proc: ArchiverProcess) -> str:
    code = proc.terminate()
    out = proc.output()
    assert code == 0 and "Traceback" not in out, out
    return out


def test_dead_letters_then_goes_on_and_never_keeps_an_embedding(r: redis.Redis, redis_url: str, archive_url: str,
                                                                 spawn: Spawn) -> None:
    """On SQLite and PostgreSQL."""
    engines = _engine(archive_url)
    db = next(engines)
    live = LiveCall(r, "bad-1")
    live.step()
    bad = {
        r.xadd(EVENTS_KEY, {"kind": "trend", "call_id": "bad-1", "event": "{not json"}): "malformed",
        r.xadd(EVENTS_KEY, {"kind": "trend", "call_id": "bad-1",
                            "event": json.dumps({"kind": "trend", "call_id": "bad-1", "pad": "x" * (1 << 20)})}):
            "exceeds the 1048576-byte limit",
        r.xadd(results_key("bad-1"), {"kind": "result", "embedding": EMBEDDING}): "no 'record' field",
    }
    live.run()
    proc = spawn(redis_url, archive_url, "--batch-size", "7")
    truths = snapshot(r, ["bad-1", *write_calls(r, "good", 2)])
    wait_archived(r, db, truths)
    dead = dead_rows(db)
    assert [(d["entry_id"], d["stream"]) for d in dead] == [
        (i.decode(), EVENTS_KEY if n < 2 else results_key("bad-1")) for n, i in enumerate(bad)]
    for d, why in zip(dead, bad.values(), strict=True):
        assert why in d["reason"] and len(d["payload"]) <= 8192
    with db.connect() as conn:  # never an embedding, not even in a dead letter
        for table in ("segments", "events", "calls", "dead_letters"):
            rows = conn.execute(text(f"SELECT * FROM {table}")).all()  # noqa: S608 - fixed names
            assert rows and not any(EMBEDDING in str(row) for row in rows), table
    assert "3 dead letters" in _stopped_cleanly(proc)
    next(engines, None)


def test_sigkill_mid_batch_then_restart_claims_and_nothing_is_doubled(r: redis.Redis, redis_url: str, pg_url: str,
                                                                       db: Engine, spawn: Spawn) -> None:
    first = spawn(redis_url, pg_url, "--batch-size", "5", consumer="first")
    truths = snapshot(r, write_calls(r, "pre", 1))
    wait_archived(r, db, truths)
    with db.connect() as lock:  # hold the archiver's next transaction: it is mid-batch
        lock.execute(text("LOCK TABLE calls IN EXCLUSIVE MODE"))
        names = write_calls(r, "kill", 3)
        wait_for(lambda: _pending(r, EVENTS_KEY, "first") + _pending(r, results_key("kill-0"), "first"), 20,
                 "entries delivered to the first archiver, unacknowledged")
        first.kill()
        lock.rollback()
    assert owed(r, names) > 0
    second = spawn(redis_url, pg_url, "--batch-size", "5", consumer="second")
    truths.update(snapshot(r, [*names, *write_calls(r, "post", 1)]))
    wait_archived(r, db, truths)
    out = _stopped_cleanly(second)
    assert "claimed" in out and "another archiver left pending" in out


def test_postgres_outage_holds_entries_then_archives_them(r: redis.Redis, redis_url: str, pg_private: PgServer,
                                                          spawn: Spawn) -> None:
    url = pg_private.create_database("archive")
    engines = _engine(url)
    db = next(engines)
    proc = spawn(redis_url, url, "--batch-size", "20", "--metrics-port", "0")
    port = re.search(r"metrics on 127\.0\.0\.1:(\d+)", proc.output()).group(1)  # type: ignore[union-attr]
    truths = snapshot(r, write_calls(r, "before", 2))
    wait_archived(r, db, truths)
    db.dispose()
    pg_private.stop()
    during: list[str] = []
    deadline = time.monotonic() + OUTAGE_S
    while time.monotonic() < deadline:  # calls keep running while the database is away
        call = LiveCall(r, f"during-{len(during)}", seed=len(during))
        during.append(call.call_id)
        while call.step():
            time.sleep(0.25)  # a call a second or so: fewer than ser:calls:ended keeps (200) in two minutes
        call.end()
    wait_for(lambda: "database write failed" in proc.output(), 10, "the archiver to notice the outage")
    held = owed(r, during)
    assert held > 0 and proc.alive()  # nothing acknowledged while nothing is committed
    with pytest.raises(urllib.error.HTTPError) as err:  # not ready; the lag keeps being reported
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
    assert err.value.code == 503 and err.value.read() == b"database unreachable\n"
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    lag = float(re.search(r"^ser_archive_lag_seconds (\S+)$", body, re.M).group(1))  # type: ignore[union-attr]
    assert "ser_archive_db_up 0.0" in body and lag > 0.5 and "ser_archive_db_errors_total 0.0" not in body
    print(f"\nPostgreSQL down {OUTAGE_S:g} s: {len(during)} calls ran meanwhile, {held} entries held "
          f"unacknowledged, lag {lag:.1f} s", end=" ")
    pg_private.start()
    wait_until_up(pg_private)
    truths.update(snapshot(r, [*during, *write_calls(r, "after", 1)]))
    back = time.monotonic()
    wait_archived(r, db, truths, timeout=30 + OUTAGE_S / 4)
    print(f"archived {time.monotonic() - back:.1f} s after it came back")
    next(engines, None)
    out = _stopped_cleanly(proc)
    assert "the database answers again" in out


def test_redis_restart_recreates_the_groups_and_goes_on(tmp_path: Path, pg_url: str, db: Engine,
                                                        spawn: Spawn) -> None:
    with RedisServer(tmp_path) as server:
        conn = redis.Redis.from_url(server.url())
        try:
            proc = spawn(server.url(), pg_url)
            before = snapshot(conn, write_calls(conn, "before", 2))
            wait_archived(conn, db, before)
            live = LiveCall(conn, "across")
            live.step()
            server.restart()  # no persistence: every key and group is gone
            while live.step():  # the producer goes on writing into the new Redis
                pass
            live.end()
            after = snapshot(conn, write_calls(conn, "after", 2))
            wait_archived(conn, db, after)
            assert all_differences(db, before) == {}  # archived before the restart, still whole
            out = _stopped_cleanly(proc)
            assert "Redis restarted or reconnected" in out or "lost its consumer group" in out
        finally:
            conn.close()


def test_two_archivers_share_the_group(r: redis.Redis, redis_url: str, pg_url: str, db: Engine,
                                       spawn: Spawn) -> None:
    procs = [spawn(redis_url, pg_url, "--batch-size", "4", consumer=n) for n in ("a", "b")]
    calls: list[str] = []
    threads = [threading.Thread(target=lambda p=p: calls.extend(write_calls(r, p, 3, seed=len(p))))
               for p in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    truths = snapshot(r, calls)
    wait_archived(r, db, truths)
    assert {c["name"] for c in r.xinfo_consumers(EVENTS_KEY, GROUP)} == {b"a", b"b"}
    done = [int(re.search(r"archived (\d+) entries", _stopped_cleanly(p)).group(1)) for p in procs]  # type: ignore[union-attr]
    assert all(n > 0 for n in done), done  # both took part


def test_drain_run_archives_what_is_owed_prunes_and_closes_lost_calls(r: redis.Redis, redis_url: str,
                                                                  tmp_path: Path) -> None:
    from archive.db import open_engine
    from archive.ingest import archive_call
    from bench.archive_lag import LABELS, MODEL

    url = f"sqlite:///{tmp_path / 'calls.db'}"
    engine = open_engine(url)
    old = time.time() - 200 * 86400
    events = [{"kind": "call_started", "call_id": "old-1", "ts": old, "source": "file", "channels": ["agent"],
               "params": {}, "model": MODEL, "labels": list(LABELS)},
              {"kind": "call_ended", "call_id": "old-1", "ts": old + 10, "reason": "completed", "duration_s": 10.0,
               "segments": 0, "failed": 0, "summary": {}}]
    archive_call(engine, events=events, records=[], call_id="old-1")
    archive_call(engine, events=[{**events[0], "call_id": "gone-1", "ts": time.time() - 60}], records=[],
                 call_id="gone-1")  # its producer died: no call_ended will come
    truths = snapshot(r, write_calls(r, "new", 2))
    time.sleep(1.0)
    proc = ArchiverProcess(redis_url, url, tmp_path / "a.log", "--drain", "--retention-days", "90",
                           "--lost-after-s", "1")
    assert proc.proc.wait(timeout=60) == 0, proc.output()
    proc.close()
    assert "pruned 1 calls older than 90 days" in proc.output() and "drained" in proc.output()
    assert "closed 1 calls as lost (nothing for 1 s): gone-1" in proc.output()
    wait_archived(r, engine, truths, timeout=1)  # all archived before it exited
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT call_id, status, end_reason FROM calls ORDER BY call_id")).all()
    assert [tuple(r) for r in rows] == [("gone-1", "ended", "lost"), ("new-0", "ended", "completed"),
                                        ("new-1", "ended", "completed")]
    engine.dispose()
