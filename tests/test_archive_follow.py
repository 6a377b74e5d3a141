"""ser-archive's Redis side against a real redis-server: the consumer group on a stream (made with an
expiry, BUSYGROUP tolerated), what a stream still owes the group, XAUTOCLAIM of a dead archiver's
entries (deleted ones reported apart), the metrics endpoint, settings and one-line CLI errors."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import pytest
import redis
from click.testing import CliRunner

from archive import follow
from archive.cli import main
from archive.metrics import ArchiveMetrics, MetricsServer, sample_names
from archive.settings import GROUP, ArchiverSettings, default_consumer
from callevents.schema import EVENTS_KEY
from workers.contract import RESULTS_TTL_S, results_key


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def test_group_on_a_new_stream_gets_an_expiry_and_an_existing_group_is_kept(r: redis.Redis) -> None:
    live, ended, other = results_key("live-1"), results_key("ended-1"), results_key("kept-1")
    r.xadd(other, {"kind": "end", "record": "{}"})
    r.expire(other, 50)
    assert follow.ensure_groups(r, [live, other]) == set()
    assert r.type(live) == b"stream" and 0 < r.ttl(live) <= RESULTS_TTL_S  # made by us: never without expiry
    assert r.ttl(other) <= 50  # someone else's expiry is not touched
    r.xadd(live, {"kind": "end", "record": "{}"})
    r.xreadgroup(GROUP, "a", {live: ">"})
    assert follow.ensure_groups(r, [live]) == set()  # BUSYGROUP: the group and its position stay
    assert r.xinfo_groups(live)[0]["last-delivered-id"] != b"0-0"
    assert follow.ensure_groups(r, [ended], mkstream=False) == {ended}
    assert not r.exists(ended)  # an ended call without a stream gets none
    assert follow.ensure_groups(r, [EVENTS_KEY]) == set() and r.ttl(EVENTS_KEY) == -1  # the producers' own key


def test_inspect_counts_pending_and_unread_and_their_age(r: redis.Redis) -> None:
    key = results_key("c-1")
    ids = [r.xadd(key, {"kind": "end", "record": "{}"}, id=f"{1000 + i}-0") for i in range(5)]
    follow.ensure_groups(r, [key])
    r.xreadgroup(GROUP, "a", {key: ">"}, count=2)
    st = follow.inspect(r, [key, results_key("gone")])
    assert st[results_key("gone")] == follow.StreamState(exists=False)
    assert (st[key].pending, st[key].unread, st[key].oldest_ms, st[key].last_ms) == (2, 3, 1000, 1004)
    r.xack(key, GROUP, *ids[:2])
    st = follow.inspect(r, [key])[key]
    assert (st.pending, st.unread, st.oldest_ms) == (0, 3, 1002)
    r.xreadgroup(GROUP, "a", {key: ">"})
    r.xack(key, GROUP, *ids[2:])
    st = follow.inspect(r, [key])[key]
    assert (st.owed, st.oldest_ms) == (0, None)
    assert follow.server_ms(r) > 1_600_000_000_000


def test_claim_takes_a_dead_consumers_entries_and_reports_deleted_ones(r: redis.Redis) -> None:
    key = results_key("c-2")
    follow.ensure_groups(r, [key])
    ids = [r.xadd(key, {"kind": "end", "record": f'{{"n":{i}}}'}) for i in range(6)]
    r.xreadgroup(GROUP, "dead", {key: ">"})
    r.xdel(key, ids[1], ids[4])
    # not idle yet: nothing claimed; the deleted ones are reported apart (Redis >= 7), whatever their idle time
    assert follow.claim(r, [key], consumer="b", min_idle_ms=60_000, count=100) == (
        [], {key: [ids[1].decode(), ids[4].decode()]})
    entries, deleted = follow.claim(r, [key], consumer="b", min_idle_ms=0, count=100)
    assert [e[1] for e in entries] == [i.decode() for i in (ids[0], ids[2], ids[3], ids[5])]
    assert entries[0][0] == key and entries[0][2] == {b"kind": b"end", b"record": b'{"n":0}'}
    assert deleted == {}
    consumers = {c["name"]: c["pending"] for c in r.xinfo_consumers(key, GROUP)}
    assert consumers == {b"dead": 0, b"b": 4}  # Redis dropped the deleted ones from the pending list
    # a cursor is followed: more pending entries than one reply holds
    many = results_key("c-3")
    follow.ensure_groups(r, [many])
    for i in range(250):
        r.xadd(many, {"n": str(i)})
    r.xreadgroup(GROUP, "dead", {many: ">"})
    got, _ = follow.claim(r, [many], consumer="b", min_idle_ms=0, count=240)
    assert len(got) == 240 and len({e[1] for e in got}) == 240
    assert follow.claim(r, [results_key("nothing")], consumer="b", min_idle_ms=0, count=10) == ([], {})


def test_scan_and_consumer_gc(r: redis.Redis) -> None:
    keys = [results_key(f"s-{i}") for i in range(3)]
    for key in keys:
        r.xadd(key, {"kind": "end", "record": "{}"})
    r.set(results_key("not-a-stream"), b"x")
    assert follow.scan_results(r) == sorted(keys)
    follow.ensure_groups(r, [EVENTS_KEY])
    r.xadd(EVENTS_KEY, {"kind": "x"})
    r.xreadgroup(GROUP, "old", {EVENTS_KEY: ">"})
    r.xack(EVENTS_KEY, GROUP, r.xrange(EVENTS_KEY)[0][0])
    r.xadd(EVENTS_KEY, {"kind": "x"})
    r.xreadgroup(GROUP, "me", {EVENTS_KEY: ">"})
    assert follow.gc_consumers(r, EVENTS_KEY, keep="me", idle_s=3600) == 0
    time.sleep(0.01)
    assert follow.gc_consumers(r, EVENTS_KEY, keep="me", idle_s=0) == 1
    assert [c["name"] for c in r.xinfo_consumers(EVENTS_KEY, GROUP)] == [b"me"]


def test_metrics_endpoint() -> None:
    metrics = ArchiveMetrics()
    state = {"ok": False}
    server = MetricsServer(metrics, 0, ready=lambda: (state["ok"], "ready" if state["ok"] else "database unreachable"))
    base = f"http://127.0.0.1:{server.port}"
    try:
        metrics.entries.labels("results", "archived").inc(3)
        body = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'ser_archive_entries_total{outcome="archived",stream="results"} 3.0' in body
        assert "ser_archive_lag_seconds 0.0" in body and 'ser_archive_pending_entries{state="unread"' in body
        assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/readyz", timeout=5)
        assert err.value.code == 503 and err.value.read() == b"database unreachable\n"
        state["ok"] = True
        assert urllib.request.urlopen(base + "/readyz", timeout=5).read() == b"ready\n"
    finally:
        server.close()
    assert {"ser_archive_lag_seconds", "ser_archive_pending_entries", "ser_archive_db_errors_total",
            "ser_archive_entries_total"} <= sample_names()


def test_settings_validate_and_name_the_consumer() -> None:
    assert ArchiverSettings().consumer_name == default_consumer()
    assert default_consumer().endswith(f"-{os.getpid()}")
    assert ArchiverSettings(consumer="arch-1").consumer_name == "arch-1"
    for bad, word in ((dict(batch_size=0), "batch size 0"), (dict(claim_idle_s=0), "claim_idle_s 0"),
                      (dict(retention_days=-1), "retention -1"), (dict(max_entry_bytes=10), "max entry size 10")):
        with pytest.raises(ValueError, match=word):
            ArchiverSettings(**bad)  # type: ignore[arg-type]


def test_cli_errors_are_one_line_without_the_password(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    res = runner.invoke(main, ["--redis-url", "redis://:s3cret@127.0.0.1:1/0", "--database",
                               f"sqlite:///{tmp_path / 'a.db'}"], env={})
    assert res.exit_code == 1 and "cannot reach Redis at redis://:***@127.0.0.1:1/0" in res.output
    assert "s3cret" not in res.output and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(main, ["--redis-url-file", str(tmp_path / "missing")], env={})
    assert res.exit_code == 1 and "cannot read --redis-url-file" in res.output
    res = runner.invoke(main, ["--batch-size", "0"], env={})
    assert res.exit_code == 2 and "batch-size" in res.output


def test_parse_turns_entries_into_events_records_or_dead_letters() -> None:
    key = results_key("c-9")
    rec = {"kind": "result", "stream_id": "c-9", "channel": "agent", "seq": 0, "start_s": 0.0, "end_s": 1.0,
           "label": "calm", "probs": {"calm": 1.0}, "embedding": "AAAA"}
    it = follow.parse(key, "1-0", {b"kind": b"result", b"record": json.dumps(rec).encode(), b"embedding": b"BBBB"},
                      max_bytes=1024)
    assert it.reason is None and it.call_id == "c-9" and "embedding" not in (it.record or {})
    event = {"kind": "call_ended", "call_id": "c-9", "ts": 1.0}
    it = follow.parse(EVENTS_KEY, "2-0", {b"event": json.dumps(event).encode()}, max_bytes=1024)
    assert it.event == event and it.call_id == "c-9" and it.record is None
    big = follow.parse(key, "3-0", {b"record": b"x" * 2000, b"embedding": b"E" * 10}, max_bytes=1024)
    assert big.reason == "entry of 2006 bytes exceeds the 1024-byte limit" and big.payload == {"record": "x" * 2000}
    for fields, why in (({b"event": b"{"}, "malformed entry"), ({b"event": b'{"kind": "trend"}'}, "no call_id"),
                        ({b"event": b'{"kind": "nope", "call_id": "c"}'}, "no valid event")):
        assert why in (follow.parse(EVENTS_KEY, "4-0", fields, max_bytes=1024).reason or ""), fields
