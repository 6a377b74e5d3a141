"""callevents: the alert/trend engine (pure) and the events/registry writer against a real redis-server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from callevents.rules import Engine, EventSettings, Rule, load_settings
from callevents.schema import (
    CALL_TTL_S,
    CALLS_KEY,
    ENDED_KEY,
    EVENTS_KEY,
    HEARTBEAT_S,
    LOST_AFTER_S,
    call_key,
    decode_event,
    encode_event,
    events_key,
    is_lost,
)
from callevents.writer import CallEvents
from models.ids import key_id

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def rec(channel: str, seq: int, neg: float, label: str | None = None, **extra: Any) -> dict[str, Any]:
    """A 3 s result whose negative labels (angry/sad/fearful/disgust) carry ``neg`` in total."""
    probs = {lab: 0.0 for lab in LABELS}
    probs["angry"] = neg
    probs["neutral"] = 1.0 - neg
    label = label or ("angry" if neg >= 0.5 else "neutral")
    return {"kind": "result", "stream_id": "c", "channel": channel, "seq": seq, "start_s": 3.0 * seq,
            "end_s": 3.0 * seq + 3.0, "label": label, "confidence": max(neg, 1 - neg), "probs": probs,
            "model": "m@1", **extra}


def kinds(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == kind]


def run(engine: Engine, records: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return [(r["seq"], ev) for r in records for ev in engine.feed(r)]


def test_hysteresis_opens_at_open_at_and_closes_only_at_close_at() -> None:
    rule = Rule(window_s=3.0, open_at=0.6, close_at=0.4)  # window of one segment: the score is its mass
    engine = Engine(EventSettings(rules=(rule,)), channels=["agent", "customer"], labels=LABELS)
    negs = [0.59, 0.6, 0.5, 0.41, 0.9, 0.4, 0.55, 0.7, 0.2]
    out = [(seq, ev) for seq, ev in run(engine, [rec("customer", i, n) for i, n in enumerate(negs)])
           if ev["kind"].startswith("alert")]
    assert [(seq, ev["kind"]) for seq, ev in out] == [
        (1, "alert_opened"), (5, "alert_closed"), (7, "alert_opened"), (8, "alert_closed")]
    opened, closed = out[0][1], out[1][1]
    assert opened == {"kind": "alert_opened", "rule": "customer_negative", "channel": "customer", "since_s": 6.0,
                      "window_s": 3.0, "score": 0.6, "threshold": 0.6,
                      "labels": ["angry", "disgust", "sad", "fearful"]}
    assert closed["since_s"] == 6.0 and closed["until_s"] == 18.0 and closed["score"] == 0.4
    assert closed["threshold"] == 0.4 and closed["reason"] == "score"
    assert engine.open == {}


def test_window_is_a_mean_over_the_last_window_s_of_audio() -> None:
    engine = Engine(EventSettings(rules=(Rule(window_s=9.0, open_at=0.6, close_at=0.4),)), channels=["customer"])
    # Masses 0, 1, 0, 1: over the whole call the mean stays <= 0.5; over the last 9 s (3 segments)
    # it reaches 2/3 at seq 3.
    events = run(engine, [rec("customer", i, n) for i, n in enumerate([0.0, 1.0, 0.0, 1.0])])
    opened = [(seq, ev) for seq, ev in events if ev["kind"] == "alert_opened"]
    assert [seq for seq, _ in opened] == [3] and opened[0][1]["score"] == pytest.approx(2 / 3, abs=1e-4)
    assert engine.score(engine.settings.rules[0], "customer") == pytest.approx(2 / 3)
    # A gap (silence) shrinks the window: after 12 s of nothing only the new segment counts.
    engine.feed(rec("customer", 9, 0.3))
    assert engine.score(engine.settings.rules[0], "customer") == pytest.approx(0.3)


def test_channel_choice() -> None:
    negative = [rec(ch, 0, 0.9) for ch in ("agent", "customer", "other")]
    default = Engine(channels=["agent", "customer", "other"])  # default rule: only "customer"
    assert [ev["channel"] for r in negative for ev in default.feed(r) if ev["kind"] == "alert_opened"] == ["customer"]
    no_customer = Engine(channels=["ch0", "ch1"])  # no "customer": every channel
    opened = [ev["channel"] for ch in ("ch0", "ch1") for ev in no_customer.feed(rec(ch, 0, 0.9))
              if ev["kind"] == "alert_opened"]
    assert opened == ["ch0", "ch1"]
    explicit = Engine(EventSettings(rules=(Rule(name="agent_neg", channels=("agent",)),)),
                      channels=["agent", "customer"])
    assert [ev["channel"] for r in negative[:2] for ev in explicit.feed(r) if ev["kind"] == "alert_opened"] == [
        "agent"]
    # Failure records and end records are ignored.
    assert explicit.feed({"kind": "failure", "channel": "agent", "seq": 1, "error": "x"}) == []


def test_trend_every_n_seconds_of_audio_and_finish_closes_open_alerts() -> None:
    engine = Engine(EventSettings(trend_every_s=5.0, trend_window_s=6.0), channels=["customer"], labels=LABELS)
    events = run(engine, [rec("customer", i, n, uncertain=(i == 2)) for i, n in enumerate([0.9, 0.8, 0.1, 0.1])])
    trends = [(seq, ev) for seq, ev in events if ev["kind"] == "trend"]
    # ends at 3, 6, 9, 12 s: a trend at 6 (>= 5) and at 12 (>= 10), none at 9.
    assert [seq for seq, _ in trends] == [1, 3]
    t = trends[0][1]
    assert t["at_s"] == 6.0 and t["segments"] == 2 and t["shares"]["angry"] == 1.0
    assert list(t["shares"]) == list(LABELS) and t["negativity"] == pytest.approx(0.85)
    assert t["last"] == {"seq": 1, "start_s": 3.0, "end_s": 6.0, "label": "angry", "confidence": 0.8,
                         "uncertain": False}
    assert trends[1][1]["shares"]["neutral"] == 1.0
    # The customer_negative rule (20 s window) is open (mean 0.475 > 0.4 never closed); finish closes it.
    assert len(engine.open) == 1
    closed = engine.finish(at_s=12.5)
    assert [(e["kind"], e["reason"], e["until_s"]) for e in closed] == [("alert_closed", "call_ended", 12.5)]
    assert engine.open == {} and engine.finish(at_s=13) == []


def test_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('trend_every_s = 2\n[[rule]]\nname = "cust"\nwindow_s = 6\nopen_at = 0.6\nclose_at = 0.55\n'
                    '[[rule]]\nname = "agent_angry"\nlabels = ["angry"]\nchannels = ["agent"]\n')
    s = load_settings(path)
    assert s.trend_every_s == 2.0 and s.trend_window_s == 20.0
    assert s.rules == (Rule(name="cust", window_s=6, open_at=0.6, close_at=0.55),
                       Rule(name="agent_angry", labels=("angry",), channels=("agent",)))
    path.write_text("")
    assert load_settings(path).rules == (Rule(),)
    path.write_text("rule = []\n")
    assert load_settings(path).rules == ()
    for bad, says in [('[[rule]]\nopen_at = 0.3\nclose_at = 0.5\n', "close_at <= open_at"),
                      ('[[rule]]\nwindow = 3\n', r"bad \[\[rule\]\]"), ('[[rule]]\nlabels = "angry"\n', "labels"),
                      ('colour = 1\n', "unknown key"), ('[[rule]]\n[[rule]]\n', "distinct"), ("x = ", "cannot read")]:
        path.write_text(bad)
        with pytest.raises(ValueError, match=says):
            load_settings(path)


def test_encode_decode() -> None:
    ev = {"kind": "trend", "call_id": "a<b>", "ts": 1.0, "channel": "x"}
    fields = encode_event(ev)
    assert decode_event({k.encode(): v.encode() for k, v in fields.items()}) == ev
    with pytest.raises(ValueError):
        encode_event({"kind": "nope", "call_id": "x"})
    with pytest.raises(ValueError):
        decode_event({b"record": b"{}"})


def entries(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    return [decode_event(f) for _, f in client.xrange(key)]


def test_writer_registry_and_streams(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    clock = iter(float(t) for t in range(1000, 2000))
    settings = EventSettings(rules=(Rule(window_s=3.0),), trend_every_s=5.0)
    calls = CallEvents(client, call_id="call <1>", source="file", channels=["agent", "customer"], model="m@1",
                       labels=LABELS, params={"crm": "42"}, settings=settings, clock=lambda: next(clock))
    calls.start()
    key = key_id("call <1>")  # registry member and event call_id: the key part (models.ids); the raw id kept
    assert key != "call <1>" and client.zrange(CALLS_KEY, 0, -1, withscores=True) == [(key.encode(), 1000.0)]
    info = json.loads(client.hget(call_key("call <1>"), "info"))
    assert info == {"kind": "call_started", "call_id": key, "ts": 1001.0, "source": "file",
                    "channels": ["agent", "customer"], "params": {"crm": "42"}, "model": "m@1", "labels": list(LABELS),
                    "raw_call_id": "call <1>"}
    out = calls.add([rec("agent", 0, 0.1), rec("customer", 1, 0.9), rec("customer", 2, 0.2)])
    assert [e["kind"] for e in out] == ["alert_opened", "trend", "alert_closed"]
    assert json.loads(client.hget(call_key("call <1>"), "alerts")) == []
    assert json.loads(client.hget(call_key("call <1>"), "trend:customer"))["last"]["seq"] == 1
    calls.add([rec("customer", 3, 0.95)])
    assert [a["rule"] for a in json.loads(client.hget(call_key("call <1>"), "alerts"))] == ["customer_negative"]
    summary = {"agent": {"segments": 1, "failed": 0}, "customer": {"segments": 3, "failed": 1}}
    done = calls.end(reason="completed", duration_s=12.0, summary=summary)
    assert [e["kind"] for e in done] == ["alert_closed", "call_ended"]
    assert done[-1]["segments"] == 4 and done[-1]["failed"] == 1 and done[-1]["reason"] == "completed"
    assert client.zcard(CALLS_KEY) == 0 and client.zrange(ENDED_KEY, 0, -1) == [key.encode()]
    per_call = entries(client, events_key("call <1>"))
    assert [e["kind"] for e in per_call] == ["call_started", "alert_opened", "trend", "alert_closed",
                                             "alert_opened", "trend", "alert_closed", "call_ended"]
    assert entries(client, EVENTS_KEY) == per_call
    assert 3500 < client.ttl(events_key("call <1>")) <= 3600 and client.ttl(call_key("call <1>")) > 3500
    assert json.loads(client.hget(call_key("call <1>"), "ended"))["summary"] == summary
    assert calls.end(reason="completed", duration_s=12.0, summary=summary) == []  # once only
    # A re-used call id starts afresh.
    again = CallEvents(client, call_id="call <1>", source="stdin", channels=["a"], clock=lambda: 3000.0)
    again.start()
    assert [e["kind"] for e in entries(client, events_key("call <1>"))] == ["call_started"]
    assert client.zcard(ENDED_KEY) == 0 and client.hget(call_key("call <1>"), "ended") is None
    with pytest.raises(ValueError, match="unknown end reason"):
        again.end(reason="bored", duration_s=1.0, summary={})


def test_async_writer_writes_the_same(redis_url: str) -> None:
    """The asyncio writer and the sync one, fed the same call with the same clock, leave the same
    events (per-call and global streams), call hash, registry entries and expiries in Redis."""
    import asyncio

    import redis.asyncio

    from callevents.writer import AsyncCallEvents

    client = redis.Redis.from_url(redis_url)
    records = [rec("customer", 0, 0.9), rec("customer", 1, 0.1), rec("customer", 2, 0.8), rec("customer", 3, 0.7)]

    def writer_args(call_id: str) -> dict[str, Any]:
        clock = iter(float(t) for t in range(1000, 2000))
        return {"call_id": call_id, "source": "stream", "channels": ["customer"], "model": "m@1", "labels": LABELS,
                "params": {"crm": "42"}, "settings": EventSettings(rules=(Rule(window_s=3.0),), trend_every_s=5.0),
                "clock": lambda: next(clock)}

    sync = CallEvents(client, **writer_args("s1"))
    sync.start()
    sync.add(records[:2])
    sync.add(records[2:])
    sync.end(reason="disconnected", duration_s=12.0, summary={"customer": {"segments": 4}})

    async def play() -> None:
        conn = redis.asyncio.Redis.from_url(redis_url)
        calls = AsyncCallEvents(conn, **writer_args("a1"))
        await calls.start()
        await calls.add(records[:2])
        await calls.add(records[2:])
        await calls.end(reason="disconnected", duration_s=12.0, summary={"customer": {"segments": 4}})
        await conn.aclose()

    asyncio.run(play())

    def state(call_id: str) -> dict[str, Any]:
        def own(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**e, "call_id": "-"} for e in evs if e["call_id"] == call_id]

        raw = {k.decode(): v.decode() for k, v in client.hgetall(call_key(call_id)).items()}
        return {"events": own(entries(client, events_key(call_id))), "global": own(entries(client, EVENTS_KEY)),
                "hash": {k: v.replace(call_id, "-") for k, v in raw.items()},
                "ttl": (client.ttl(call_key(call_id)) > 0, client.ttl(events_key(call_id)) > 0),
                "live": client.zscore(CALLS_KEY, call_id), "ended": client.zscore(ENDED_KEY, call_id)}

    expected = state("s1")
    kinds = [e["kind"] for e in expected["events"]]
    assert kinds[0] == "call_started" and kinds[-1] == "call_ended" and "alert_opened" in kinds and "trend" in kinds
    assert expected["live"] is None and expected["ended"] is not None and expected["hash"]
    assert state("a1") == expected


def test_writer_survives_redis_errors_and_embedded_writes_nothing(redis_url: str) -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    calls = CallEvents(dead, call_id="x", source="file", channels=["customer"])
    calls.start()
    calls.add([rec("customer", 0, 0.9)])
    calls.end(reason="completed", duration_s=3.0, summary={})
    # call_started failed; alert_opened was dropped without trying (back-off); the end tried again.
    assert calls.dropped == calls.written == 4  # call_started, alert_opened, alert_closed, call_ended
    embedded = CallEvents(None, call_id="x", source="file", channels=["customer"])
    embedded.start()
    assert embedded.add([rec("customer", 0, 0.9)]) == [] and embedded.written == 0
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_ser_produce_writes_events_for_a_distributed_call(redis_url: str, stereo_call: Path, tiny_bundle_dir: Path,
                                                         tmp_path: Path) -> None:
    from test_pipeline_redis import QUEUE_KEY, producer_proc, stream_kinds, wait_for, work_in_process

    from models.bundle import load_bundle
    from models.runtime import EmotionModel

    client = redis.Redis.from_url(redis_url)
    rules = tmp_path / "rules.toml"
    rules.write_text("trend_every_s = 3\n[[rule]]\nname = \"any\"\nwindow_s = 3\nopen_at = 0\nclose_at = 0\n"
                     "channels = [\"agent\", \"customer\"]\n")
    prod = producer_proc(redis_url, str(stereo_call), "--model", str(tiny_bundle_dir), "--stream-id", "ev1",
                         "--channel-names", "agent,customer", "--alert-rules", str(rules), "--format", "jsonl")
    wait_for(lambda: client.llen(QUEUE_KEY) >= 2)  # both channels' batch (16 segments) queued at the end of input
    assert "end" not in stream_kinds(client, "ev1")  # the end record waits for the call's last record
    assert client.zrange(CALLS_KEY, 0, -1) == [b"ev1"]  # active while its results are outstanding
    work_in_process(redis_url, EmotionModel(load_bundle(tiny_bundle_dir), threads=1))
    out, err = prod.communicate(timeout=60)
    assert prod.returncode == 0, err
    events = entries(client, events_key("ev1"))
    assert events[0]["kind"] == "call_started" and events[0]["source"] == "file"
    assert events[0]["channels"] == ["agent", "customer"] and events[0]["model"] == "tiny-test@0.0.1"
    # open_at 0: the rule opens on the first segment of each channel; close_at 0 keeps it open to the end.
    opened = [e["channel"] for e in events if e["kind"] == "alert_opened"]
    assert sorted(opened) == ["agent", "customer"]
    assert [e["reason"] for e in events if e["kind"] == "alert_closed"] == ["call_ended", "call_ended"]
    trends = [(e["channel"], e["last"]["seq"]) for e in events if e["kind"] == "trend"]
    assert sorted(trends) == sorted([("agent", 0), ("agent", 1), ("agent", 4), ("customer", 2), ("customer", 3),
                                     ("customer", 4)])
    ended = events[-1]
    assert ended["kind"] == "call_ended" and ended["reason"] == "completed" and ended["segments"] == 6
    assert set(ended["summary"]) == {"agent", "customer"} and ended["duration_s"] == 18.0
    assert client.zcard(CALLS_KEY) == 0 and client.zrange(ENDED_KEY, 0, -1) == [b"ev1"]


def test_heartbeat_marks_a_live_call_alive_until_it_ends(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from callevents import writer

    client = redis.Redis.from_url(redis_url)
    now = [100.0]
    monkeypatch.setattr(writer.time, "monotonic", lambda: now[0])
    wall = iter(float(t) for t in range(5000, 6000))
    calls = CallEvents(client, call_id="hb", source="stdin", channels=["customer"], clock=lambda: next(wall))
    calls.beat()  # not started: nothing
    assert client.exists(call_key("hb")) == 0
    calls.start()
    first = float(client.hget(call_key("hb"), "alive"))
    calls.beat()  # within HEARTBEAT_S of the last write: no round trip
    assert float(client.hget(call_key("hb"), "alive")) == first
    now[0] += HEARTBEAT_S
    client.zrem(CALLS_KEY, "hb")  # e.g. Redis restarted empty: the heartbeat registers the call again
    calls.beat()
    assert float(client.hget(call_key("hb"), "alive")) > first and client.zscore(CALLS_KEY, "hb") is not None
    assert client.ttl(call_key("hb")) > CALL_TTL_S - 5
    calls.end(reason="completed", duration_s=1.0, summary={})
    ended_alive = client.hget(call_key("hb"), "alive")
    now[0] += 10 * HEARTBEAT_S
    calls.beat()  # an ended call beats no more
    assert client.hget(call_key("hb"), "alive") == ended_alive and client.zcard(CALLS_KEY) == 0
    assert is_lost(1000.0, 1000.0 + LOST_AFTER_S + 1) and not is_lost(1000.0, 1000.0 + LOST_AFTER_S)
    embedded = CallEvents(None, call_id="e", source="file", channels=["a"])
    embedded.start()
    embedded.beat()
    assert embedded.written == 0


def test_async_heartbeat(redis_url: str) -> None:
    import asyncio

    import redis.asyncio

    from callevents.writer import AsyncCallEvents

    async def play() -> None:
        conn = redis.asyncio.Redis.from_url(redis_url)
        calls = AsyncCallEvents(conn, call_id="ahb", source="stream", channels=["customer"], clock=lambda: 7.0)
        await calls.start()
        calls._beat_at -= HEARTBEAT_S  # as if HEARTBEAT_S had passed
        await conn.hdel(call_key("ahb"), "alive")
        await calls.beat()
        await conn.aclose()

    asyncio.run(play())
    assert float(redis.Redis.from_url(redis_url).hget(call_key("ahb"), "alive")) == 7.0
