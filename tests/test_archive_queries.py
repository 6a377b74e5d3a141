"""archive.filters and archive.queries on constructed calls, on SQLite and a real PostgreSQL."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from archive_rows import MONDAY, add_call, open_archive
from sqlalchemy import Engine, func, select

from archive import queries
from archive.export import export, write_parquet
from archive.filters import CallFilter, as_params, parse
from archive.schema import calls, dead_letters, metadata

H = 3600.0


@pytest.fixture
def engine(archive_url: str) -> Iterator[Engine]:
    eng = open_archive(archive_url)
    yield eng
    eng.dispose()


def ids(engine: Engine, flt: CallFilter, **kw: object) -> list[str]:
    with engine.connect() as conn:
        return [r["call_id"] for r in queries.search(conn, flt, limit=1000, **kw).rows]  # type: ignore[arg-type]


def test_parse_times_and_errors() -> None:
    assert parse({"since": "2026-11-30"}).since_ts == MONDAY
    assert parse({"since": "2026-11-30T01:00:00"}).since_ts == MONDAY + H  # no zone: UTC
    assert parse({"since": "2026-11-30T02:00:00+01:00"}).since_ts == MONDAY + H
    assert parse({"since": "2026-11-30T01:00:00Z"}).since_ts == MONDAY + H
    assert parse({"since": str(MONDAY)}).since_ts == MONDAY
    assert parse({"until": "2026-11-30"}).until_ts == MONDAY + 86400  # a date includes its day
    assert parse({"agent": "", "page": "3", "trend": "declining"}) == CallFilter(trend="Declining")
    flt = parse({"since": "2026-11-30", "label": "Angry", "label-share-min": "0.25", "label_role": "customer",
                 "interruptions_min": "2", "model_version": "ser@3.1.0", "duration_max": "600"})
    assert parse(as_params(flt)) == flt and flt.label == "angry"
    for bad, name in [({"since": "last week"}, "since"), ({"customer_score_min": "6"}, "customer_score_min"),
                      ({"label_share_min": "1.5", "label": "sad"}, "label_share_min"), ({"label": "sad"}, "label"),
                      ({"interruptions_min": "2.5"}, "interruptions_min"), ({"status": "gone"}, "status"),
                      ({"agent_score_min": "2", "agent_score_max": "1"}, "agent_score_min"),
                      ({"duration_min": "-1"}, "duration_min"), ({"non_talk_share_max": "nan"}, "non_talk_share_max")]:
        with pytest.raises(ValueError, match=name) as err:
            parse(bad)
        assert repr(next(iter(bad.values()))) in str(err.value)


def test_each_filter_narrows(engine: Engine) -> None:
    with engine.begin() as conn:
        add_call(conn, "base", agent="ann", queue="sales", direction="inbound", tenant="t1")
        add_call(conn, "early", started_ts=MONDAY - 2 * 86400, agent="bob")
        add_call(conn, "angry", customer_score=-4.0, customer_trend="Declining", customer_negative_share=0.7,
                 shares={"customer": {"angry": 0.6, "calm": 0.1}, "agent": {"angry": 0.05}}, alert_rules=["anger"])
        add_call(conn, "agentangry", agent_score=-3.0, shares={"agent": {"angry": 0.5}, "customer": {"angry": 0.1}})
        add_call(conn, "happy", customer_score=4.5, customer_trend="Improving", queue="support", tenant="t2",
                 direction="outbound")
        add_call(conn, "noisy", interruptions=7, non_talk_share=0.1, duration_s=1800.0, alert_rules=["overtalk"])
        add_call(conn, "old", model="ser-cnn-lstm@3.0.0", model_version="3.0.0", status="live", ended_ts=None,
                 duration_s=None, non_talk_share=None, interruptions=None)
    everyone = {"base", "early", "angry", "agentangry", "happy", "noisy", "old"}
    assert set(ids(engine, CallFilter())) == everyone
    cases = {
        (("since", "2026-11-30"),): everyone - {"early"},
        (("until", "2026-11-29"),): {"early"},
        (("agent", "ann"),): {"base"},
        (("queue", "support"),): {"happy"},
        (("direction", "outbound"),): {"happy"},
        (("tenant", "t1"),): {"base"},
        (("customer_score_max", "-1"),): {"angry"},
        (("customer_score_min", "4"),): {"happy"},
        (("customer_score_min", "-4"), ("customer_score_max", "-4")): {"angry"},  # inclusive
        (("agent_score_max", "0"),): {"agent" + "angry"},
        (("agent_score_min", "0.5"),): everyone - {"agentangry"},
        (("trend", "Declining"),): {"angry"},
        (("label", "angry"), ("label_share_min", "0.5")): {"angry", "agentangry"},
        (("label", "angry"), ("label_share_min", "0.5"), ("label_role", "customer")): {"angry"},
        (("label", "angry"), ("label_share_min", "0.5"), ("label_role", "agent")): {"agentangry"},
        (("label", "calm"), ("label_share_min", "0.05")): {"angry"},
        (("alert_rule", "anger"),): {"angry"},
        (("alert_rule", "nothing"),): set(),
        (("interruptions_min", "1"),): {"noisy"},
        (("non_talk_share_max", "0.2"),): {"noisy"},
        (("non_talk_share_min", "0.3"),): everyone - {"noisy", "old"},
        (("duration_min", "600"),): {"noisy"},
        (("duration_max", "600"),): everyone - {"noisy", "old"},
        (("model_version", "3.0.0"),): {"old"},
        (("model_version", "ser-cnn-lstm@3.1.0"),): everyone - {"old"},
        (("status", "live"),): {"old"},
        (("agent", "ann"), ("queue", "support")): set(),
    }
    for params, expected in cases.items():
        assert set(ids(engine, parse(dict(params)))) == expected, params


def test_paging_and_sorting(engine: Engine) -> None:
    scores = [1.0, -2.0, None, 3.5, 0.0, -4.5, None]
    with engine.begin() as conn:
        for i, score in enumerate(scores):
            add_call(conn, f"c{i}", started_ts=MONDAY + i * H, customer_score=score, interruptions=i)
    assert ids(engine, CallFilter()) == [f"c{i}" for i in reversed(range(7))]  # newest first
    assert ids(engine, CallFilter(), descending=False) == [f"c{i}" for i in range(7)]
    # by score: nulls last either way, ties by start in the same direction
    assert ids(engine, CallFilter(), sort="customer_score", descending=False) == ["c5", "c1", "c4", "c0", "c3",
                                                                                  "c2", "c6"]
    assert ids(engine, CallFilter(), sort="customer_score") == ["c3", "c0", "c4", "c1", "c5", "c6", "c2"]
    seen = []
    with engine.connect() as conn:
        for offset in range(0, 7, 3):
            page = queries.search(conn, CallFilter(), sort="interruptions", descending=False, limit=3, offset=offset)
            assert page.total == 7 and page.offset == offset and page.limit == 3
            seen += [r["call_id"] for r in page.rows]
        assert queries.search(conn, parse({"customer_score_min": "0"}), limit=2, offset=10).rows == []
        assert queries.search(conn, parse({"customer_score_min": "0"}), limit=2, offset=10).total == 3
        with pytest.raises(ValueError, match="sort"):
            queries.search(conn, CallFilter(), sort="nope")
        with pytest.raises(ValueError, match="limit"):
            queries.search(conn, CallFilter(), limit=queries.MAX_PAGE_SIZE + 1)
    assert seen == [f"c{i}" for i in range(7)]


def test_trends_buckets_across_a_week_boundary(engine: Engine) -> None:
    sunday_late = MONDAY - 1.0  # 2026-11-29 23:59:59 UTC, a Sunday
    assert datetime.fromtimestamp(MONDAY, UTC).weekday() == 0
    with engine.begin() as conn:
        add_call(conn, "sun", started_ts=sunday_late, agent="ann", customer_score=-2.0, interruptions=4,
                 duration_s=100.0, non_talk_share=0.5, customer_negative_share=0.6)
        add_call(conn, "mon", started_ts=MONDAY, agent="ann", customer_score=2.0, interruptions=1, duration_s=300.0,
                 non_talk_share=0.1, customer_negative_share=0.2)
        add_call(conn, "tue", started_ts=MONDAY + 86400 + 5 * H, agent="ann", customer_score=1.0, interruptions=3,
                 duration_s=100.0, non_talk_share=0.3, customer_negative_share=0.1)
        add_call(conn, "bob", started_ts=MONDAY + 6 * 86400 + 23 * H, agent="bob", queue="q", customer_score=None)
        add_call(conn, "nobody", started_ts=MONDAY + 2 * H, agent=None)
    with engine.connect() as conn:
        weeks = queries.trends(conn, CallFilter(), by="agent", period="week")
        days = queries.trends(conn, parse({"agent": "ann"}), by="agent", period="day")
        queues = queries.trends(conn, CallFilter(), by="queue", period="week")
    got = {(r["agent"], r["period_ts"]): r for r in weeks}
    assert list(got) == [("ann", MONDAY - 7 * 86400), ("ann", MONDAY), ("bob", MONDAY), (None, MONDAY)]
    first, second = got[("ann", MONDAY - 7 * 86400)], got[("ann", MONDAY)]
    assert first["calls"] == 1 and first["customer_score"] == pytest.approx(-2.0)
    assert second["calls"] == 2 and second["customer_score"] == pytest.approx(1.5)
    assert second["customer_negative_share"] == pytest.approx(0.15)
    assert second["interruptions_per_call"] == pytest.approx(2.0)
    assert second["non_talk_share"] == pytest.approx((0.1 * 300 + 0.3 * 100) / 400)  # duration-weighted
    assert got[("bob", MONDAY)]["customer_score"] is None and got[("bob", MONDAY)]["calls"] == 1
    assert [(r["period_ts"], r["calls"]) for r in days] == [(MONDAY - 86400, 1), (MONDAY, 1), (MONDAY + 86400, 1)]
    assert [(r["queue"], r["calls"]) for r in queues] == [("q", 1), (None, 1), (None, 3)]  # None last
    with engine.connect() as conn, pytest.raises(ValueError, match="period"):
        queries.trends(conn, CallFilter(), by="agent", period="month")


def test_show_by_raw_or_key_id(engine: Engine) -> None:
    with engine.begin() as conn:
        add_call(conn, "k1", raw_id="CA123", alert_rules=["anger", "sadness"], channels=("agent", "customer", "x"))
    with engine.connect() as conn:
        by_raw, by_key = queries.show(conn, "CA123"), queries.show(conn, "k1")
        assert queries.show(conn, "CA999") is None
    assert by_raw == by_key and by_raw is not None
    assert by_raw["call"]["raw_id"] == "CA123"
    assert [s["channel"] for s in by_raw["speakers"]] == ["agent", "customer", "x"]  # the call's channel order
    assert [a["rule"] for a in by_raw["alerts"]] == ["anger", "sadness"]
    assert len(by_raw["segments"]) == 12 and len(by_raw["turns"]) == 3
    starts = [s["start_s"] for s in by_raw["segments"]]
    assert starts == sorted(starts)
    assert [e["kind"] for e in by_raw["events"]] == ["silence"]


def test_export_round_trip(engine: Engine, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    with engine.begin() as conn:
        for i in range(5):
            add_call(conn, f"e{i}", started_ts=MONDAY + i * H, agent="ann" if i % 2 else "bob",
                     params={"crm": f"#{i}"}, n_segments=3)
    flt = parse({"agent": "ann"})
    with engine.connect() as conn:
        n_calls = export(conn, flt, tmp_path / "calls.parquet", fmt="parquet")
        n_segs = export(conn, flt, tmp_path / "segs.csv", fmt="csv", what="segments")
        n_all = export(conn, CallFilter(), tmp_path / "all.csv", fmt="csv")
        rows = list(queries.export_rows(conn, CallFilter(), what="segments"))
    assert (n_calls, n_segs, n_all) == (2, 2 * 2 * 4, 5)
    table = pq.read_table(tmp_path / "calls.parquet")
    assert table.column("call_id").to_pylist() == ["e1", "e3"]
    assert table.schema.field("started_ts").type == "double" and table.schema.field("segments").type == "int64"
    assert [json.loads(p) for p in table.column("params").to_pylist()] == [{"crm": "#1"}, {"crm": "#3"}]
    assert json.loads(table.column("roles").to_pylist()[0]) == {"agent": "agent", "customer": "customer"}
    with open(tmp_path / "segs.csv", newline="") as fh:
        segs = list(csv.DictReader(fh))
    assert {r["call_id"] for r in segs} == {"e1", "e3"} and {r["role"] for r in segs} == {"agent", "customer"}
    result = [r for r in segs if r["kind"] == "result"]
    assert len(result) == 12 and json.loads(result[0]["probs"])["calm"] == pytest.approx(0.8)
    assert {r["history"] for r in segs if r["kind"] == "turn"} == {""}  # no value: empty cell
    # row groups: a small group size writes several, and reads back whole
    write_parquet(iter(rows), tmp_path / "groups.parquet", what="segments", row_group_rows=7)
    back = pq.ParquetFile(tmp_path / "groups.parquet")
    assert back.metadata.num_row_groups == -(-len(rows) // 7) and back.metadata.num_rows == len(rows) == 40
    assert not list(tmp_path.glob("*.partial"))
    with engine.connect() as conn:  # an empty export is a valid file with the schema
        assert export(conn, parse({"agent": "nobody"}), tmp_path / "none.parquet", fmt="parquet") == 0
    assert pq.read_table(tmp_path / "none.parquet").num_rows == 0


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for t in metadata.sorted_tables}


def test_delete_leaves_nothing_behind(engine: Engine) -> None:
    with engine.begin() as conn:
        add_call(conn, "gone", raw_id="+15551234", shares={"customer": {"angry": 0.3}}, alert_rules=["anger"],
                 agent="a1", queue="q1", tenant="t1")  # rollup rows of its own
        add_call(conn, "kept", shares={"customer": {"angry": 0.3}}, alert_rules=["anger"], agent="a2", queue="q2",
                 tenant="t2")
        conn.execute(dead_letters.insert(), [
            {"stream": "ser:events", "entry_id": "1-0", "call_id": "gone", "reason": "bad", "payload": "{}", "ts": 1.0},
            {"stream": "ser:events", "entry_id": "2-0", "call_id": "kept", "reason": "bad", "payload": "{}", "ts": 1.0},
        ])
    one = counts(engine)
    assert all(n >= 1 for n in one.values()), one  # every table holds something of each call
    with engine.begin() as conn:
        assert queries.delete(conn, ["+15551234", "nope"]) == 1
    after = counts(engine)
    assert all(after[t] * 2 == one[t] for t in one), (one, after)  # exactly half of every table: the other call's
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            if "call_id" in table.c:
                left = conn.execute(select(func.count()).select_from(table).where(table.c.call_id == "gone"))
                assert left.scalar_one() == 0, table.name
    with engine.begin() as conn:
        assert queries.delete(conn, ["gone"]) == 0
        assert queries.delete(conn, ["kept"]) == 1
    assert set(counts(engine).values()) == {0}


def test_prune_by_age(engine: Engine) -> None:
    now = MONDAY + 100 * 86400
    with engine.begin() as conn:
        for age_days in (0, 10, 89, 91, 200):
            add_call(conn, f"age{age_days}", started_ts=now - age_days * 86400 - 60)
    with engine.begin() as conn:
        assert queries.prune(conn, older_than_s=90 * 86400, now=now, dry_run=True) == 2
        assert queries.prune(conn, older_than_s=90 * 86400, now=now) == 2
    assert sorted(ids(engine, CallFilter())) == ["age0", "age10", "age89"]
    with engine.begin() as conn:
        assert queries.prune(conn, older_than_s=86400 * 5, now=now) == 2
    assert ids(engine, CallFilter()) == ["age0"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(calls)).scalar_one() == 1


def test_calls_written_by_ingest(engine: Engine) -> None:
    """What archive.ingest writes is what search, show, trends and delete read."""
    from archive_fixtures import make_call

    from archive import db, ingest
    from models.ids import key_id

    batch = ingest.Batch()
    for seed, raw in enumerate(["CA-one", "CA-two"]):
        events, records = make_call(raw, seed=seed, t0=MONDAY + seed * H)
        for e in events:
            batch.add_event(e)
        for r in records:
            batch.add_record(raw, r)
    with db.begin_write(engine) as conn:
        ingest.write(conn, batch, now=MONDAY + 3 * H)
        ingest.dead_letter(conn, stream="ser:events", entry_id="9-0", reason="bad", payload={"x": 1},
                           call_id=key_id("CA-one"), now=MONDAY)
    with engine.connect() as conn:
        page = queries.search(conn, parse({"agent": "agent-0", "queue": "billing", "alert_rule": "customer_negative"}))
        assert [r["raw_id"] for r in page.rows] == ["CA-one"]
        shown = queries.show(conn, "CA-one")
        assert shown is not None and shown["call"]["call_id"] == key_id("CA-one")
        assert len(shown["segments"]) == 25 and len(shown["turns"]) == 2 and shown["alerts"][0]["until_s"] == 15.0
        (week,) = queries.trends(conn, CallFilter(), by="tenant", period="week")
        assert week["tenant"] == "acme" and week["calls"] == 2 and week["customer_score"] is not None
    with engine.begin() as conn:
        assert queries.delete(conn, ["CA-one"]) == 1
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            if "call_id" in table.c:
                left = conn.execute(select(func.count()).select_from(table).where(
                    table.c.call_id == key_id("CA-one"))).scalar_one()
                assert left == 0, table.name
