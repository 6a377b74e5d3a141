"""The per-day rollup of calls (:data:`archive.schema.call_days`) that quarter-long ``trends`` sum instead
of reading every call (docs/archive.md, "Trends rollup").

A row holds, for one *grain* (a set of the dimensions agent, queue and tenant: :data:`GRAINS`), one UTC day
and one value of each dimension of the grain (``''`` for a call without one, and for the dimensions outside
the grain), the sums that :func:`archive.queries.trends` computes from ``calls``: calls, and per measured
column how many calls have a value and its sum. Every call is counted once in every grain.

It is kept by **deltas**: every change of a call's rolled-up columns (:data:`COLUMNS`: a new call, its
``call_started``, its end and scores, a rescoring, ``close_lost``, a delete or prune) subtracts the call's
old contribution and adds its new one, in the transaction that changes the call (the call's row is locked
or, on SQLite, the database is), as ``value = value + delta`` upserts in key order: archivers side by side
add up instead of overwriting each other. :func:`rebuild` recomputes it from ``calls`` (migration 0003,
bulk loads). Sums of floats added and subtracted over time may differ from a fresh sum in the last bits;
counts are exact, and a value is absent exactly where the per-call query has none.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, bindparam, case, delete, func, literal, select

from archive.schema import call_days, calls

#: Grains: which dimensions a row keeps (the others are ``''``). A trend by X filtered on Y (X, Y among
#: agent/queue/tenant) reads the grain of {X, Y}.
DIMENSIONS = ("agent", "queue", "tenant")
GRAINS: tuple[tuple[str, ...], ...] = (("agent",), ("queue",), ("tenant",), ("agent", "queue"),
                                       ("agent", "tenant"), ("queue", "tenant"), ("agent", "queue", "tenant"))
#: The columns of ``calls`` the rollup depends on.
COLUMNS = ("started_ts", "agent", "queue", "tenant", "customer_score", "customer_negative_share", "interruptions",
           "non_talk_share", "duration_s")
#: The sums kept per row besides ``calls``: ``*_n`` how many calls have the value, ``*_sum`` its sum (customer
#: score, customer negative share, interruptions, non-talk seconds = non_talk_share x duration_s, and the
#: duration of calls with a non-talk share).
SUMS = ("score_n", "score_sum", "neg_n", "neg_sum", "inter_n", "inter_sum", "nt_n", "nt_sum", "base_n", "base_sum")
DAY_S = 86400
IN_CHUNK = 500
#: The primary key of a rollup row.
KEY = ("grain", "day_ts", "agent", "queue", "tenant")


def grain_name(dims: Iterable[str]) -> str:
    return "+".join(d for d in DIMENSIONS if d in set(dims))


def day_of(ts: float) -> float:
    return float(math.floor(ts / DAY_S) * DAY_S)


def _contribution(row: Mapping[str, Any]) -> dict[str, float]:
    """One call's sums (``calls`` included)."""
    out = dict.fromkeys(SUMS, 0.0) | {"calls": 1.0}
    for value, n, total in ((row["customer_score"], "score_n", "score_sum"),
                            (row["customer_negative_share"], "neg_n", "neg_sum"),
                            (row["interruptions"], "inter_n", "inter_sum")):
        if value is not None:
            out[n], out[total] = 1.0, float(value)
    share, dur = row["non_talk_share"], row["duration_s"]
    if share is not None and dur is not None:
        out["nt_n"], out["nt_sum"] = 1.0, float(share) * float(dur)
        out["base_n"], out["base_sum"] = 1.0, float(dur)
    return out


_GRAIN_INDEX = [(grain_name(g), [i if d in g else -1 for i, d in enumerate(DIMENSIONS)]) for g in GRAINS]


Key = tuple[str, float, str, str, str]


def _keys(day: float, dims: list[str | None]) -> list[Key]:
    out: list[Key] = []
    for name, index in _GRAIN_INDEX:
        a, q, t = ((dims[i] or "") if i >= 0 else "" for i in index)
        out.append((name, day, a, q, t))
    return out


def snapshot(conn: Connection, call_ids: Iterable[str], *, lock: bool = False) -> dict[str, dict[str, Any]]:
    """The rolled-up columns of the calls that exist among ``call_ids``; ``lock``: on PostgreSQL their rows
    are locked (in key order) so that nobody changes them before this transaction's change is applied."""
    wanted = sorted(set(call_ids))
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(wanted), IN_CHUNK):
        query = select(calls.c.call_id, *(calls.c[c] for c in COLUMNS)) \
            .where(calls.c.call_id.in_(wanted[i:i + IN_CHUNK])).order_by(calls.c.call_id)
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        for r in conn.execute(query):
            out[r.call_id] = dict(r._mapping)
    return out


def apply_changes(conn: Connection, before: Mapping[str, Mapping[str, Any]],
                  after: Mapping[str, Mapping[str, Any]]) -> int:
    """Move the calls' contributions from their ``before`` to their ``after`` columns (a call absent from one
    side: added or removed). Returns the rollup rows changed."""
    deltas: dict[Key, dict[str, float]] = {}
    for cid in set(before) | set(after):
        old, new = before.get(cid), after.get(cid)
        if old is not None and new is not None and all(old[c] == new[c] for c in COLUMNS):
            continue
        sides = [(sign, (day_of(float(row["started_ts"])), row["agent"], row["queue"], row["tenant"]),
                  _contribution(row)) for row, sign in ((old, -1.0), (new, 1.0)) if row is not None]
        if len(sides) == 2 and sides[0][1:] == sides[1][1:]:
            continue  # e.g. a live call's non-talk share without a duration: nothing rolled up changed
        for sign, (day, *dims), contrib in sides:
            for key in _keys(day, dims):
                acc = deltas.setdefault(key, dict.fromkeys(("calls", *SUMS), 0.0))
                for name, v in contrib.items():
                    acc[name] += sign * v
    rows = [{"grain": k[0], "day_ts": k[1], "agent": k[2], "queue": k[3], "tenant": k[4],
             "calls": int(d["calls"]), **{s: (int(d[s]) if s.endswith("_n") else d[s]) for s in SUMS}}
            for k, d in sorted(deltas.items()) if any(d.values())]
    if not rows:
        return 0
    _add(conn, rows)
    return len(rows)


def _add(conn: Connection, rows: list[dict[str, Any]]) -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(call_days)
    stmt = stmt.on_conflict_do_update(index_elements=list(KEY),
                                      set_={c: call_days.c[c] + stmt.excluded[c] for c in ("calls", *SUMS)})
    conn.execute(stmt, rows)
    # rows left with no call are removed (a deleted or moved call leaves nothing behind)
    emptied = [{f"k_{k}": r[k] for k in KEY} for r in rows if r["calls"] < 0]
    if emptied:
        conn.execute(delete(call_days).where(*(call_days.c[k] == bindparam(f"k_{k}") for k in KEY),
                                             call_days.c.calls <= 0), emptied)


class Tracked:
    """``with Tracked(conn, ids):`` around a change of those calls keeps the rollup in step with it."""

    def __init__(self, conn: Connection, call_ids: Iterable[str]) -> None:
        self.conn, self.ids = conn, sorted(set(call_ids))

    def __enter__(self) -> Tracked:
        self.before = snapshot(self.conn, self.ids, lock=True)
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            apply_changes(self.conn, self.before, snapshot(self.conn, self.ids))


def rebuild(conn: Connection) -> None:
    """Recompute the whole rollup from ``calls`` (migration 0003, bulk loads)."""
    conn.execute(delete(call_days))
    c = calls.c
    day = func.floor(c.started_ts / float(DAY_S)) * DAY_S if conn.dialect.name == "postgresql" else \
        func.cast(c.started_ts / float(DAY_S), call_days.c.calls.type) * DAY_S
    both = case((c.non_talk_share.is_not(None), c.duration_s))
    nt = c.non_talk_share * c.duration_s
    for g in GRAINS:
        dims = [func.coalesce(c[d], "") if d in g else literal("") for d in DIMENSIONS]
        sums = [func.count(c.customer_score), func.coalesce(func.sum(c.customer_score), 0.0),
                func.count(c.customer_negative_share), func.coalesce(func.sum(c.customer_negative_share), 0.0),
                func.count(c.interruptions), func.coalesce(func.sum(c.interruptions), 0),
                func.count(nt), func.coalesce(func.sum(nt), 0.0), func.count(both), func.coalesce(func.sum(both), 0.0)]
        query = select(literal(grain_name(g)), day, *dims, func.count(), *sums).group_by(day, *dims)
        conn.execute(call_days.insert().from_select(["grain", "day_ts", *DIMENSIONS, "calls", *SUMS], query))
