"""The trends rollup (archive.rollup, table call_days) gives what the per-call trends query gives, on SQLite
and a real PostgreSQL: calls written by archive.ingest in random batches, then deleted, pruned, replayed,
closed as lost and rescored."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from archive_fixtures import make_call
from sqlalchemy import Engine, select, update

from archive import db, ingest, queries, rollup
from archive.filters import CallFilter
from archive.schema import call_days, calls, segments

DAY = 86400.0
T0 = 1_796_083_200.0 - 20 * DAY  # a UTC midnight (a Monday minus 20 days)
AGENTS, QUEUES, TENANTS = ("ann", "bob", "cy"), ("billing", "sales"), ("acme", "zed")


@pytest.fixture
def engine(archive_url: str) -> Iterator[Engine]:
    eng = db.open_engine(archive_url)
    yield eng
    eng.dispose()


def floor_entries(n: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """n calls over 20 days: random agent/queue/tenant (some without), some still live, some without
    call_started (records only: placeholders)."""
    rng = random.Random(seed)
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        params = {k: rng.choice(v) for k, v in (("agent", AGENTS), ("queue", QUEUES), ("tenant", TENANTS))
                  if rng.random() < 0.85}
        events, records = make_call(f"RC{seed}-{i}", seed=rng.randrange(10_000), segments=rng.randint(2, 6),
                                    t0=T0 + rng.uniform(0, 20 * DAY), params=params, ended=rng.random() < 0.8)
        if rng.random() < 0.1:
            events = [e for e in events if e["kind"] != "call_started"]
        out += [("e", e) for e in events] + [("r", r) for r in records]
    return out


def write(engine: Engine, entries: list[tuple[str, dict[str, Any]]], rng: random.Random) -> None:
    i = 0
    while i < len(entries):
        n = rng.randint(1, 40)
        batch = ingest.Batch()
        for kind, obj in entries[i:i + n]:
            batch.add_event(obj) if kind == "e" else batch.add_record(obj["stream_id"], obj)
        i += n
        with db.begin_write(engine) as conn:
            ingest.write(conn, batch)


FILTERS = [CallFilter(), CallFilter(since_ts=T0 + 3 * DAY), CallFilter(since_ts=T0 + 2 * DAY, until_ts=T0 + 12 * DAY),
           CallFilter(agent="ann"), CallFilter(tenant="acme", since_ts=T0 + 7 * DAY), CallFilter(queue="sales"),
           CallFilter(agent="bob", queue="billing", tenant="zed")]


def same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(x[k] == pytest.approx(y[k], rel=1e-9, abs=1e-9) if isinstance(x[k], float)
                                     else x[k] == y[k] for k in x) for x, y in zip(a, b, strict=True))


def check(engine: Engine) -> int:
    """Every filter x by x period: rollup == per-call; returns how many trend rows were compared."""
    rows = 0
    with engine.connect() as conn:
        for flt in FILTERS:
            for by in queries.TREND_BY:
                assert queries.rollup_grain(flt, by=by) is not None
                for period in queries.TREND_PERIODS:
                    got = queries.trends(conn, flt, by=by, period=period)
                    want = queries.trends(conn, flt, by=by, period=period, rollup=False)
                    assert same(got, want), (flt, by, period, got, want)
                    rows += len(want)
        kept = sorted(tuple(r) for r in conn.execute(select(call_days)))
    with db.begin_write(engine) as conn:  # a fresh rebuild holds the same rows
        rollup.rebuild(conn)
        fresh = sorted(tuple(r) for r in conn.execute(select(call_days)))
    assert [r[:6] for r in kept] == [r[:6] for r in fresh]  # keys and call counts exactly
    assert all(u == pytest.approx(v, rel=1e-9, abs=1e-9) for x, y in zip(kept, fresh, strict=True)
               for u, v in zip(x[6:], y[6:], strict=True))
    return rows


def test_rollup_trends_equal_per_call_trends_through_every_change(engine: Engine) -> None:
    rng = random.Random(5)
    entries = floor_entries(40, seed=1)
    shuffled = entries[:]
    rng.shuffle(shuffled)  # records before call_started, call_ended before records...
    write(engine, shuffled, rng)
    assert check(engine) > 50
    write(engine, entries[: len(entries) // 2], rng)  # replayed entries change nothing
    check(engine)
    with engine.connect() as conn:
        ids = sorted(conn.execute(select(calls.c.call_id)).scalars())
    with db.begin_write(engine) as conn:
        assert queries.delete(conn, ids[:5]) == 5
        assert queries.prune(conn, older_than_s=14 * DAY, now=T0 + 20 * DAY) > 0
    check(engine)
    with db.begin_write(engine) as conn:  # rescoring: segments changed, scores recomputed
        conn.execute(update(segments).where(segments.c.kind == "result", segments.c.seq == 0)
                     .values(probs={"angry": 1.0}))
        ingest.refresh_scores(conn, ids)
        live = len(ingest.close_lost(conn, idle_s=60.0, now=T0 + 100 * DAY))
    assert live > 0  # the live calls were closed as lost: their duration and scores changed
    check(engine)
    write(engine, floor_entries(15, seed=2), rng)  # more calls after all that
    check(engine)


def test_which_filters_use_the_rollup() -> None:
    assert queries.rollup_grain(CallFilter(), by="agent") == "agent"
    assert queries.rollup_grain(CallFilter(tenant="t", since_ts=T0), by="queue") == "queue+tenant"
    assert queries.rollup_grain(CallFilter(agent="a", queue="q", tenant="t"), by="agent") == "agent+queue+tenant"
    for flt in (CallFilter(since_ts=T0 + 1.0), CallFilter(until_ts=T0 + 3600.0), CallFilter(direction="inbound"),
                CallFilter(status="ended"), CallFilter(customer_score_min=0.0), CallFilter(model_version="3.1.0"),
                CallFilter(label="angry", label_share_min=0.2), CallFilter(alert_rule="x"), CallFilter(agent="")):
        assert queries.rollup_grain(flt, by="agent") is None, flt
