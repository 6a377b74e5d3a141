"""archive.ingest on real SQLite and PostgreSQL: what a call keeps, every record archived field for field,
idempotent replays in any order, placeholders before call_started, validation, dead letters, embedded
archive_call."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from archive_fixtures import MODEL, make_call
from sqlalchemy import Engine, select

from archive import db, ingest, schema
from archive.scores import speaker_scores
from archive.validate import MAX_RECORD_CHARS, SEGMENT_FIELDS

NOW = 1_765_100_000.0


@pytest.fixture
def engine(archive_url: str) -> Iterator[Engine]:
    e = db.open_engine(archive_url)
    yield e
    e.dispose()


def write(engine: Engine, events: list[dict[str, Any]] = (), records: list[dict[str, Any]] = (),  # type: ignore[assignment]
          call_id: str = "CA1", now: float = NOW) -> set[str]:
    batch = ingest.Batch()
    for e in events:
        batch.add_event(e)
    for r in records:
        batch.add_record(call_id, r)
    with db.begin_write(engine) as conn:
        return ingest.write(conn, batch, now=now)


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with engine.connect() as conn:
        for name, table in schema.metadata.tables.items():
            cols = [c for c in table.c if c.name != "id"]
            out[name] = [tuple(r) for r in conn.execute(select(*cols).order_by(*table.primary_key.columns))]
    return out


def same_rollup(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """Rollup rows equal: keys and counts exactly, float sums to 1e-9."""
    return len(a) == len(b) and all(
        len(x) == len(y) and all(u == pytest.approx(v, rel=1e-12, abs=1e-9) if isinstance(u, float) else u == v
                                 for u, v in zip(x, y, strict=True)) for x, y in zip(a, b, strict=True))


def call_row(engine: Engine, call_id: str = "CA1") -> Any:
    with engine.connect() as conn:
        return conn.execute(select(schema.calls).where(schema.calls.c.call_id == call_id)).one()


def test_what_a_call_keeps(engine: Engine) -> None:
    events, records = make_call("CA1", seed=1)
    assert write(engine, events, records) == {"CA1"}
    c = call_row(engine)
    assert (c.raw_id, c.source, c.status, c.end_reason) == ("CA1", "twilio", "ended", "completed")
    assert c.channels == ["customer", "agent"] and c.roles == {"customer": "customer", "agent": "agent"}
    assert (c.agent, c.queue, c.direction, c.tenant) == ("agent-1", "billing", "inbound", "acme")  # META_KEYS
    assert c.params["campaign"] == "winter" and c.params["Queue"] == "billing"
    assert (c.model, c.model_version) == (MODEL, "3.1.0") and "angry" in c.labels
    assert c.started_ts == events[0]["ts"] and c.ended_ts == events[-1]["ts"] and c.duration_s == 37.0
    assert (c.segments, c.failed, c.alerts_fired) == (24, 1, 1)
    assert c.talk_s == pytest.approx(2 * 37.0 * 0.4) and c.non_talk_share == pytest.approx(0.25, abs=1e-3)
    assert (c.interruptions, c.overtalk_count, c.silence_count) == (3, 3, 2)
    assert c.dynamics["overtalks"] == [[11.0, 12.0]]  # call_ended's totals win over the dynamics event
    expected = speaker_scores(records, duration_s=37.0, channels=["customer", "agent"])
    assert c.customer_score == expected["customer"].score and c.agent_trend == expected["agent"].trend
    assert c.customer_negative_share == expected["customer"].negative_share
    with engine.connect() as conn:
        spk = {r.channel: r for r in conn.execute(select(schema.speakers))}
        assert spk["customer"].quarters == list(expected["customer"].quarters)
        assert spk["agent"].interruptions == 2 and spk["agent"].talk_share == 0.4 and spk["agent"].role == "agent"
        shares = {(r.channel, r.label): r.share for r in conn.execute(select(schema.label_shares))}
        assert shares[("customer", "angry")] == expected["customer"].label_shares["angry"]
        kinds = sorted(r.kind for r in conn.execute(select(schema.events)))
        assert kinds == ["alert_closed", "alert_opened", "dynamics", "end", "overtalk", "silence"]  # no trend
        a = conn.execute(select(schema.alerts)).one()
        assert (a.rule, a.channel, a.since_s, a.until_s, a.score, a.close_reason) == \
            ("customer_negative", "customer", 6.0, 15.0, 0.65, "score")


def records_back(engine: Engine, call_id: str) -> list[dict[str, Any]]:
    """Each stored segment row as the record it came from (columns + extra, nulls of absent fields dropped)."""
    out = []
    with engine.connect() as conn:
        raw = conn.execute(select(schema.calls.c.raw_id).where(schema.calls.c.call_id == call_id)).scalar()
        for r in conn.execute(select(schema.segments).where(schema.segments.c.call_id == call_id)):
            m = dict(r._mapping)
            rec = {k: m[k] for k in SEGMENT_FIELDS if k in m and m[k] is not None}
            rec |= (m["extra"] or {}) | {"stream_id": raw}
            out.append(rec)
    return out


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["channel"], r["seq"], r["kind"])


@pytest.mark.parametrize("n", [12, 80])  # 80: PostgreSQL takes the rows through COPY (db.COPY_MIN_ROWS)
def test_every_record_archived_field_for_field(engine: Engine, n: int) -> None:
    events, records = make_call("CA é/1", seed=2, segments=n)  # not a key id: stored under key_id, raw kept
    records[0]["embedding"] = "AAAA"  # never archived
    records[1]["novel_field"] = {"x": [1, 2]}  # a field the schema does not know: kept in extra
    write(engine, events, records, call_id="CA é/1")
    from models.ids import key_id

    back = sorted(records_back(engine, key_id("CA é/1")), key=_key)
    want = sorted(({k: v for k, v in r.items() if k != "embedding"} for r in records if r["kind"] != "end"), key=_key)
    assert back == want
    with engine.connect() as conn:
        assert conn.execute(select(schema.calls.c.raw_id)).scalar() == "CA é/1"


def test_replay_twice_in_random_order_gives_the_same_database(engine: Engine) -> None:
    calls = [make_call(f"CA{i}", seed=i, segments=6, ended=i != 2) for i in range(4)]
    entries = [("e", e, None) for ev, _ in calls for e in ev] + \
              [("r", r, r["stream_id"]) for _, rec in calls for r in rec]
    for kind, obj, cid in entries:
        write(engine, [obj] if kind == "e" else [], [obj] if kind == "r" else [], call_id=cid or "")
    once = dump(engine)
    assert len(once["calls"]) == 4 and len(once["segments"]) == 4 * (12 + 3)
    with engine.begin() as conn:
        conn.execute(schema.calls.delete())
        conn.execute(schema.call_days.delete())  # the rollup has no foreign key (queries.delete keeps it)
    assert dump(engine)["segments"] == []
    rng = random.Random(7)
    twice = entries * 2
    rng.shuffle(twice)
    i = 0
    while i < len(twice):  # random batch sizes, duplicates within a batch included
        n = rng.randint(1, 25)
        chunk = twice[i:i + n]
        i += n
        batch = ingest.Batch()
        for kind, obj, cid in chunk:
            batch.add_event(obj) if kind == "e" else batch.add_record(cid, obj)
        with db.begin_write(engine) as conn:
            ingest.write(conn, batch, now=NOW)
    again = dump(engine)
    # the rollup's float sums may differ in the last bits (added and subtracted in another order)
    assert same_rollup(again.pop("call_days"), once.pop("call_days"))
    assert again == once


def test_two_writers_side_by_side(engine: Engine) -> None:
    """Two archivers writing overlapping calls at once, each every entry in its own random order: no
    deadlock, no error, the same database as one writer in order."""
    import threading

    calls = [make_call(f"CB{i}", seed=i, segments=4) for i in range(5)]
    entries = [("e", e, None) for ev, _ in calls for e in ev] + \
              [("r", r, r["stream_id"]) for _, rec in calls for r in rec]
    for kind, obj, cid in entries:
        write(engine, [obj] if kind == "e" else [], [obj] if kind == "r" else [], call_id=cid or "")
    once = dump(engine)
    with engine.begin() as conn:
        conn.execute(schema.calls.delete())
        conn.execute(schema.call_days.delete())
    errors: list[BaseException] = []

    def run(seed: int) -> None:
        rng = random.Random(seed)
        mine = entries[:]
        rng.shuffle(mine)
        try:
            for i in range(0, len(mine), 6):
                batch = ingest.Batch()
                for kind, obj, cid in mine[i:i + 6]:
                    batch.add_event(obj) if kind == "e" else batch.add_record(cid, obj)
                with db.begin_write(engine) as conn:
                    ingest.write(conn, batch, now=NOW)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    again = dump(engine)
    assert same_rollup(again.pop("call_days"), once.pop("call_days"))
    assert again == once


def test_records_before_call_started_make_a_placeholder(engine: Engine) -> None:
    events, records = make_call("CA9", seed=3)
    started, ended = events[0], events[-1]
    write(engine, [], records[:5], call_id="CA9")
    c = call_row(engine, "CA9")
    assert (c.status, c.raw_id, c.channels, c.params, c.agent, c.model) == ("live", "CA9", [], {}, None, MODEL)
    assert c.segments == 0 and c.customer_score is None  # counted once the call has ended
    assert c.started_ts == pytest.approx(NOW - max(r["end_s"] for r in records[:5]))  # estimated
    write(engine, [ended], [], call_id="CA9")  # call_ended before call_started: scored at once
    c = call_row(engine, "CA9")
    assert c.status == "ended" and c.customer_score is not None and c.channels == []
    write(engine, [started], records[5:], call_id="CA9")
    c = call_row(engine, "CA9")
    assert c.started_ts == started["ts"] and c.channels == ["customer", "agent"] and c.agent == "agent-0"
    assert c.status == "ended" and c.segments == 24  # the late records were counted and scored
    assert c.customer_score == speaker_scores(records, duration_s=37.0, channels=[])["customer"].score


def test_dynamics_events_update_a_live_call_newest_first(engine: Engine) -> None:
    events, _ = make_call("CA5", ended=False)
    dyn = events[3]
    newer = {**dyn, "at_s": 20.0, "ts": dyn["ts"] + 10, "non_talk_s": 5.0, "duration_s": 20.0}
    write(engine, [events[0], newer])
    write(engine, [dyn])  # an older snapshot arriving later changes nothing
    c = call_row(engine, "CA5")
    assert c.status == "live" and c.dynamics["at_s"] == 20.0 and c.non_talk_share == 0.25


def test_roles_from_params_and_mono_headline(engine: Engine) -> None:
    events, records = make_call("CA6", channels=("ch0", "ch1"), params={"customer_channel": "ch1"})
    write(engine, events, records, call_id="CA6")
    c = call_row(engine, "CA6")
    assert c.roles == {"ch1": "customer"} and c.customer_score is not None and c.agent_score is None
    events, records = make_call("CA7", channels=("ch0",), params={})
    write(engine, events, records, call_id="CA7")
    c = call_row(engine, "CA7")
    assert c.roles == {} and c.customer_score is not None  # a mono call's one voice is the headline


@pytest.mark.parametrize("event, reason", [
    ({"kind": "nope", "call_id": "a", "ts": 1.0}, "unknown event kind 'nope'"),
    ({"kind": "call_started", "call_id": "a", "ts": 1.0}, "channels must be a list"),
    ({"kind": "call_ended", "call_id": "a", "ts": 1.0, "duration_s": "3"}, "duration_s must be a finite number"),
    ({"kind": "alert_opened", "call_id": "a", "ts": 1.0, "channel": "c", "since_s": 1.0}, "rule must be"),
    ({"kind": "silence", "call_id": "", "ts": 1.0, "start_s": 0.0, "end_s": 1.0}, "call_id must be"),
    ({"kind": "dynamics", "call_id": "a", "ts": True, "at_s": 1.0, "channels": {}}, "ts must be a finite number"),
    ({"kind": "dynamics", "call_id": "a", "ts": 1.0, "at_s": 1.0, "channels": {}, "pad": "x" * 300_000},
     "over the limit"),
    (["not", "an", "object"], "must be an object"),
])
def test_invalid_events_are_refused_with_the_reason(event: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        ingest.Batch().add_event(event)


@pytest.mark.parametrize("change, reason", [
    ({"kind": "bogus"}, "unknown record kind 'bogus'"),
    ({"seq": -1}, "seq must be an integer in 0..2147483647"),
    ({"seq": 2**31}, "seq must be an integer in"),
    ({"label": "a\x00b"}, "label holds a NUL"),
    ({"seq": 1.5}, "seq must be an integer"),
    ({"channel": None}, "channel must be a non-empty string"),
    ({"channel": "c" * 65}, "channel is 65 characters, over 64"),
    ({"start_s": 5.0, "end_s": 4.0}, "need 0 <= start_s <= end_s"),
    ({"probs": {"angry": 1.5}}, "must be a probability"),
    ({"probs": []}, "probs must be"),
    ({"uncertain": "yes"}, "uncertain must be true or false"),
    ({"stream_id": "other"}, "record of call 'other' in the results stream of 'CA1'"),
    ({"pad": "x" * MAX_RECORD_CHARS}, "over the limit"),
    ({"confidence": float("nan")}, "not JSON-serialisable|finite"),
])
def test_invalid_records_are_refused_with_the_reason(change: dict[str, Any], reason: str) -> None:
    _, records = make_call("CA1")
    with pytest.raises(ValueError, match=reason):
        ingest.Batch().add_record("CA1", records[0] | change)


def test_trend_events_are_valid_but_not_kept() -> None:
    events, _ = make_call()
    batch = ingest.Batch()
    batch.add_event(events[1])
    assert events[1]["kind"] == "trend" and len(batch) == 0


def test_dead_letter_is_idempotent_and_truncated(engine: Engine) -> None:
    with db.begin_write(engine) as conn:
        for _ in range(2):
            ingest.dead_letter(conn, stream="ser:events", entry_id="1-0", reason="unknown event kind 'x'\n(bad)",
                               payload={b"event": b"\xff" * 10_000}, call_id="CA é", now=NOW)
    with engine.connect() as conn:
        row = conn.execute(select(schema.dead_letters)).one()
    assert (row.stream, row.entry_id, row.reason, row.ts) == ("ser:events", "1-0", "unknown event kind 'x' (bad)", NOW)
    assert len(row.payload) == ingest.MAX_DEAD_PAYLOAD and row.call_id.startswith("CA-h")


def test_archive_call_embedded_and_all_or_nothing(engine: Engine) -> None:
    events, records = make_call("CA3", seed=4)
    ingest.archive_call(engine, events=events, records=records, call_id="CA3")
    assert call_row(engine, "CA3").segments == 24
    events, records = make_call("CA4", seed=5)
    with pytest.raises(ValueError, match="unknown record kind"):
        ingest.archive_call(engine, events=events, records=records + [{"kind": "x"}], call_id="CA4")
    with engine.connect() as conn:
        assert conn.execute(select(schema.calls.c.call_id)).scalars().all() == ["CA3"]


def test_refresh_scores_after_a_segment_changes(engine: Engine) -> None:
    events, records = make_call("CA8", seed=6, segments=4)
    write(engine, events, records, call_id="CA8")
    with engine.begin() as conn:
        conn.execute(schema.segments.update().where(schema.segments.c.kind == "result")
                     .values(probs={"happy": 1.0}))
        ingest.refresh_scores(conn, ["CA8"])
    c = call_row(engine, "CA8")
    assert c.customer_score == 5.0 and c.customer_negative_share == 0.0 and c.customer_trend == "NoChange"


def test_a_real_call_from_redis_equals_its_results_stream(engine: Engine, redis_url: str, stereo_call: Any,
                                                          speaker_bundle_dir: Any) -> None:
    """The pipeline's own output (ser-produce through Redis, a worker, the call events): read back from the
    streams as ser-archive reads them, archived, and every record of the results stream is in the archive."""
    import redis
    from test_pipeline_redis import producer_proc, wait_for, work_in_process

    from callevents.schema import EVENTS_KEY, decode_event
    from models.bundle import load_bundle
    from models.runtime import EmotionModel
    from workers.contract import decode_entry, results_key

    client = redis.Redis.from_url(redis_url)
    prod = producer_proc(redis_url, str(stereo_call), "--model", str(speaker_bundle_dir), "--stream-id", "real 1",
                         "--channel-names", "agent,customer", "--format", "jsonl")
    wait_for(lambda: client.llen("rq:queue:ser") >= 2)
    work_in_process(redis_url, EmotionModel(load_bundle(speaker_bundle_dir), threads=1))
    _, err = prod.communicate(timeout=60)
    assert prod.returncode == 0, err
    batch = ingest.Batch()
    for _, fields in client.xrange(EVENTS_KEY):
        batch.add_event(decode_event(fields))
    stream = [decode_entry(f, embedding=True) for _, f in client.xrange(results_key("real 1"))]
    assert {r["kind"] for r in stream} >= {"result", "turn", "end"}
    for r in stream:
        batch.add_record("real 1", r)
    with db.begin_write(engine) as conn:
        ingest.write(conn, batch)
    from models.ids import key_id

    c = call_row(engine, key_id("real 1"))
    # ser-produce itself names the call by its key id (--stream-id goes through models.ids.key_id)
    assert c.raw_id == key_id("real 1") and c.status == "ended" and c.channels == ["agent", "customer"]
    assert c.segments == sum(r["kind"] == "result" for r in stream) and c.customer_score is not None
    want = sorted(({k: v for k, v in r.items() if k != "embedding"} for r in stream if r["kind"] != "end"), key=_key)
    assert sorted(records_back(engine, key_id("real 1")), key=_key) == want


def test_close_lost_ends_calls_whose_producer_vanished(engine: Engine) -> None:
    events, records = make_call("CL1", seed=8, segments=4, ended=False)
    write(engine, events, records, call_id="CL1", now=NOW)
    with db.begin_write(engine) as conn:
        assert ingest.close_lost(conn, idle_s=60.0, now=NOW + 30) == []
        assert ingest.close_lost(conn, idle_s=60.0, now=NOW + 120) == ["CL1"]
    c = call_row(engine, "CL1")
    last_end = max(r["end_s"] for r in records if "end_s" in r and r["kind"] != "end")
    assert (c.status, c.end_reason, c.ended_ts, c.duration_s) == ("ended", "lost", NOW, last_end)
    assert c.customer_score == speaker_scores(records, duration_s=last_end, channels=["customer", "agent"])[
        "customer"].score
    ended = make_call("CL1", seed=8, segments=4)[0][-1]  # the producer's call_ended turns up after all
    write(engine, [ended], call_id="CL1", now=NOW + 200)
    c = call_row(engine, "CL1")
    assert (c.end_reason, c.duration_s) == ("completed", ended["duration_s"])
