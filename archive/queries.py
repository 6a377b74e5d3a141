"""Reads of the archive: search (a page of calls), show (one call), trends (per agent/queue/tenant and
day/week), rows for export; and deletes: one call (an erasure request) or every call older than a
retention period. Used by ``ser-calls``, the dashboard and ``bench.archive``.

Every read takes a :class:`~archive.filters.CallFilter` (one translation to SQL: :func:`archive.filters.apply`).
Day and week buckets are computed on the unix seconds in SQL the same way on PostgreSQL and SQLite: UTC days,
weeks starting Monday 00:00 UTC (:func:`bucket_start`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, Float, Select, Table, case, func, or_, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from archive import rollup as rollup_mod
from archive.filters import SORT_COLUMNS, SORTS, CallFilter, apply
from archive.schema import alerts, call_days, calls, dead_letters, events, metadata, segments, speakers

#: Rows per page unless asked otherwise, and the most a page may hold.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Default retention (days) of ``ser-calls prune`` and ``ser-archive --retention-days``.
DEFAULT_RETENTION_DAYS = 90
TREND_BY = ("agent", "queue", "tenant")
TREND_PERIODS = ("day", "week")
#: Seconds per period, and the offset that makes weeks start on Monday (1970-01-01 was a Thursday).
PERIOD_SECONDS = {"day": 86400, "week": 7 * 86400}
PERIOD_OFFSET = {"day": 0, "week": 3 * 86400}
#: Rows fetched per round trip when streaming an export (server-side cursor on PostgreSQL).
EXPORT_BATCH_ROWS = 2000
#: Calls deleted per statement (keeps IN lists short).
DELETE_CHUNK = 500

#: The columns of a search result row (the calls' summary).
SUMMARY_COLUMNS = ("call_id", "raw_id", "source", "status", "end_reason", "started_ts", "ended_ts", "duration_s",
                   "agent", "queue", "direction", "tenant", "model", "customer_score", "customer_trend",
                   "customer_negative_share", "agent_score", "agent_trend", "interruptions", "non_talk_share",
                   "alerts_fired", "segments")
#: Tables holding a call's rows besides ``calls`` (every table with a foreign key to it).
CHILD_TABLES: tuple[Table, ...] = tuple(
    t for t in metadata.sorted_tables if any(fk.column.table is calls for fk in t.foreign_keys))


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]  # calls' summary columns
    total: int  # calls matching the filter
    offset: int
    limit: int


class floor_(FunctionElement[float]):
    """floor(x) on both databases: SQLite (without its optional math functions) gets CAST(... AS INTEGER),
    which is floor for the non-negative unix seconds this is used on."""

    type = Float()
    inherit_cache = True


@compiles(floor_)
def _floor_default(element: floor_, compiler: SQLCompiler, **kw: Any) -> str:
    return f"floor({compiler.process(element.clauses, **kw)})"


@compiles(floor_, "sqlite")
def _floor_sqlite(element: floor_, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(({compiler.process(element.clauses, **kw)}) AS INTEGER)"


def bucket_start(ts: ColumnElement[Any] | Column[Any], period: str) -> ColumnElement[float]:
    """The start (unix s) of the UTC day or Monday-started week holding ``ts``."""
    width, offset = PERIOD_SECONDS[period], PERIOD_OFFSET[period]
    return floor_((ts + offset) / float(width)) * width - offset


def _check_sort(sort: str) -> None:
    if sort not in SORTS:
        raise ValueError(f"sort: must be one of {', '.join(SORTS)}, got {sort!r}")


def search_statement(flt: CallFilter, *, sort: str = "started", descending: bool = True,
                     limit: int = DEFAULT_PAGE_SIZE, offset: int = 0) -> Select[Any]:
    """The SELECT of one :func:`search` page (``bench.archive`` explains it): the page's call ids first,
    from the filter and sort columns alone (an index-only scan of ``ix_calls_started_cover`` where the
    database likes it), then those rows' summary columns: the wide ``calls`` rows are read for the page
    only, not for every call the filter and sort go through."""
    _check_sort(sort)
    column = SORT_COLUMNS[sort]
    first = column.desc() if descending else column.asc()
    order: list[Any] = [first.nulls_last() if column.nullable else first]
    if sort != "started":
        order.append(calls.c.started_ts.desc() if descending else calls.c.started_ts.asc())
    order.append(calls.c.call_id.desc() if descending else calls.c.call_id.asc())
    page = apply(select(calls.c.call_id), flt).order_by(*order).limit(limit).offset(offset).subquery("page")
    return (select(*(calls.c[name] for name in SUMMARY_COLUMNS))
            .join_from(calls, page, calls.c.call_id == page.c.call_id).order_by(*order))


def search(conn: Connection, flt: CallFilter, *, sort: str = "started", descending: bool = True,
           limit: int = DEFAULT_PAGE_SIZE, offset: int = 0) -> Page:
    """A page of calls matching ``flt`` (summary columns), sorted by ``sort`` (:data:`archive.filters.SORTS`;
    calls without that value last, ties by start then id), and how many match in all."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit: must be in 1..{MAX_PAGE_SIZE}, got {limit!r}")
    if offset < 0:
        raise ValueError(f"offset: must be >= 0, got {offset!r}")
    stmt = search_statement(flt, sort=sort, descending=descending, limit=limit, offset=offset)
    rows = [dict(r._mapping) for r in conn.execute(stmt)]
    if 0 < len(rows) < limit or (offset == 0 and not rows):
        total = offset + len(rows)
    else:
        total = int(conn.execute(apply(select(func.count()).select_from(calls), flt)).scalar_one())
    return Page(rows=rows, total=total, offset=offset, limit=limit)


def resolve(conn: Connection, call_ids: Iterable[str]) -> dict[str, str]:
    """Given ids (key ids or raw ids) -> the key id of the archived call; ids not archived are left out."""
    wanted = list(dict.fromkeys(call_ids))
    found: dict[str, str] = {}
    for i in range(0, len(wanted), DELETE_CHUNK):
        chunk = wanted[i:i + DELETE_CHUNK]
        stmt = select(calls.c.call_id, calls.c.raw_id).where(or_(calls.c.call_id.in_(chunk),
                                                                 calls.c.raw_id.in_(chunk)))
        for key, raw in conn.execute(stmt):
            if key in chunk:
                found[key] = key
            if raw in chunk:
                found.setdefault(raw, key)
    return found


def show(conn: Connection, call_id: str) -> dict[str, Any] | None:
    """Everything archived about one call (by key id or raw id): the call row, speakers with quarters,
    alerts, events (silences, overtalks, dynamics), segments and turns in time order. None when absent."""
    key = resolve(conn, [call_id]).get(call_id)
    if key is None:
        return None
    call = dict(conn.execute(select(calls).where(calls.c.call_id == key)).one()._mapping)
    order = {name: i for i, name in enumerate(call.get("channels") or [])}
    spk = [dict(r._mapping) for r in conn.execute(select(speakers).where(speakers.c.call_id == key))]
    spk.sort(key=lambda r: (order.get(r["channel"], len(order)), r["channel"]))
    al = [dict(r._mapping) for r in conn.execute(
        select(alerts).where(alerts.c.call_id == key).order_by(alerts.c.since_s, alerts.c.channel, alerts.c.rule))]
    ev = [dict(r._mapping) for r in conn.execute(
        select(events).where(events.c.call_id == key).order_by(events.c.at_s, events.c.ts, events.c.event_key))]
    seg = [dict(r._mapping) for r in conn.execute(
        select(segments).where(segments.c.call_id == key)
        .order_by(segments.c.start_s, segments.c.channel, segments.c.seq))]
    return {"call": call, "speakers": spk, "alerts": al, "events": ev,
            "segments": [s for s in seg if s["kind"] != "turn"], "turns": [s for s in seg if s["kind"] == "turn"]}


def trends(conn: Connection, flt: CallFilter, *, by: str, period: str, rollup: bool = True) -> list[dict[str, Any]]:
    """Per (``by`` value, period start): calls, mean customer score, negative share (customer), interruptions
    per call, non-talk share. Summed from the per-day rollup (:mod:`archive.rollup`) where the filter allows
    (:func:`rollup_grain`; ``rollup=False``: never), else computed from the calls.

    Rows: ``{by: value (None: calls without one), "period_ts": start, "calls", "customer_score"`` (mean over
    calls with a score), ``"customer_negative_share"`` (mean), ``"interruptions_per_call"`` (mean over calls
    with dynamics), ``"non_talk_share"`` (duration-weighted: non-talk seconds / seconds)``}``, ordered by value
    (None last) then period."""
    if rollup and period in TREND_PERIODS and rollup_grain(flt, by=by) is not None:
        return _rollup_trends(conn, flt, by=by, period=period)
    out = []
    for r in conn.execute(trends_statement(flt, by=by, period=period)):
        base = float(r.base_s or 0.0)
        out.append({by: r.key, "period_ts": float(r.period_ts), "calls": int(r.calls),
                    "customer_score": _float(r.customer_score),
                    "customer_negative_share": _float(r.customer_negative_share),
                    "interruptions_per_call": _float(r.interruptions_per_call),
                    "non_talk_share": float(r.non_talk_s) / base if base > 0 and r.non_talk_s is not None else None})
    return out


def trends_statement(flt: CallFilter, *, by: str, period: str) -> Select[Any]:
    """The grouped SELECT of :func:`trends` (``bench.archive`` explains it)."""
    if by not in TREND_BY:
        raise ValueError(f"by: must be one of {', '.join(TREND_BY)}, got {by!r}")
    if period not in TREND_PERIODS:
        raise ValueError(f"period: must be one of {', '.join(TREND_PERIODS)}, got {period!r}")
    c = calls.c
    key = c[by]
    bucket = bucket_start(c.started_ts, period).label("period_ts")
    weighted = c.non_talk_share * c.duration_s
    stmt = select(
        key.label("key"), bucket, func.count().label("calls"), func.avg(c.customer_score).label("customer_score"),
        func.avg(c.customer_negative_share).label("customer_negative_share"),
        func.avg(c.interruptions).label("interruptions_per_call"),
        func.sum(weighted).label("non_talk_s"),
        func.sum(case((c.non_talk_share.is_not(None), c.duration_s))).label("base_s"),
    )
    return apply(stmt, flt).group_by(key, bucket).order_by(key.is_(None), key, bucket)


def rollup_grain(flt: CallFilter, *, by: str) -> str | None:
    """The rollup grain (:data:`archive.rollup.GRAINS`) that answers trends by ``by`` under ``flt``, or None
    when only the calls can: the filter may use ``since``/``until`` on whole UTC days and ``agent``,
    ``queue``, ``tenant``; nothing else."""
    for f in fields(flt):
        value = getattr(flt, f.name)
        if value is None:
            continue
        if f.name in ("since_ts", "until_ts"):
            if value % rollup_mod.DAY_S != 0:
                return None
        elif f.name not in rollup_mod.DIMENSIONS or value == "":
            return None
    if by not in rollup_mod.DIMENSIONS:
        return None
    return rollup_mod.grain_name({by, *(d for d in rollup_mod.DIMENSIONS if getattr(flt, d) is not None)})


def rollup_trends_statement(flt: CallFilter, *, by: str, period: str) -> Select[Any]:
    """The grouped SELECT over :data:`archive.schema.call_days` that :func:`trends` runs when it can."""
    grain = rollup_grain(flt, by=by)
    if grain is None or period not in TREND_PERIODS:
        raise ValueError(f"trends by {by!r} per {period!r} under this filter cannot use the rollup")
    d = call_days.c
    key, bucket = d[by], bucket_start(d.day_ts, period).label("period_ts")
    where = [d.grain == grain]
    if flt.since_ts is not None:
        where.append(d.day_ts >= flt.since_ts)
    if flt.until_ts is not None:
        where.append(d.day_ts < flt.until_ts)
    where += [d[dim] == getattr(flt, dim) for dim in rollup_mod.DIMENSIONS if getattr(flt, dim) is not None]
    def mean(total: str, n: str) -> Any:  # NULL where no call has the value (a residue of deltas is ignored)
        return func.sum(d[total]) / func.nullif(func.sum(d[n]), 0)

    return (select(key.label("key"), bucket, func.sum(d.calls).label("calls"), mean("score_sum", "score_n"),
                   mean("neg_sum", "neg_n"), mean("inter_sum", "inter_n"),
                   case((func.sum(d.nt_n) > 0, func.sum(d.nt_sum) / func.nullif(func.sum(d.base_sum), 0.0))))
            .where(*where).group_by(key, bucket).order_by(key == "", key, bucket))


def _rollup_trends(conn: Connection, flt: CallFilter, *, by: str, period: str) -> list[dict[str, Any]]:
    names = (by, "period_ts", "calls", "customer_score", "customer_negative_share", "interruptions_per_call",
             "non_talk_share")
    out = []
    for key, period_ts, n, score, neg, inter, non_talk in conn.execute(
            rollup_trends_statement(flt, by=by, period=period)):
        out.append(dict(zip(names, (key or None, float(period_ts), int(n), _float(score), _float(neg), _float(inter),
                                    _float(non_talk)), strict=True)))
    return out


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


#: Export columns of ``segments`` rows: the call's ids and start, then the record.
SEGMENT_EXPORT_COLUMNS = ("call_id", "raw_id", "started_ts", "channel", "role", "seq", "kind", "start_s",
                          "end_s", "label", "confidence", "uncertain", "probs", "history", "segments", "error",
                          "model", "extra")
#: Export columns of ``calls`` rows (every column; JSON ones as values).
CALL_EXPORT_COLUMNS = tuple(c.name for c in calls.columns)


def export_rows(conn: Connection, flt: CallFilter, *, what: str = "calls") -> Iterator[dict[str, Any]]:
    """Rows for export, streamed: ``calls`` (one per call) or ``segments`` (one per record, with the call's
    raw id, start and the channel's role), in call start order. Reads :data:`EXPORT_BATCH_ROWS` at a time
    (a server-side cursor on PostgreSQL), so an export never holds the whole result in memory."""
    if what == "calls":
        stmt = apply(select(calls), flt).order_by(calls.c.started_ts, calls.c.call_id)
    elif what == "segments":
        s = segments.c
        stmt = apply(select(
            s.call_id, calls.c.raw_id, calls.c.started_ts, s.channel, calls.c.roles, s.seq, s.kind, s.start_s,
            s.end_s, s.label, s.confidence, s.uncertain, s.probs, s.history, s.segments, s.error, s.model, s.extra,
        ).join(calls, calls.c.call_id == s.call_id), flt).order_by(
            calls.c.started_ts, s.call_id, s.start_s, s.channel, s.kind, s.seq)
    else:
        raise ValueError(f"what: must be calls or segments, got {what!r}")
    result = conn.execute(stmt.execution_options(yield_per=EXPORT_BATCH_ROWS))
    try:
        for row in result:
            rec = dict(row._mapping)
            if what == "segments":
                roles = rec.pop("roles") or {}
                rec["role"] = roles.get(rec["channel"])
                rec = {name: rec[name] for name in SEGMENT_EXPORT_COLUMNS}
            yield rec
    finally:
        result.close()


def delete(conn: Connection, call_ids: Sequence[str]) -> int:
    """Delete calls and everything of theirs; returns how many calls were deleted.

    Ids are key ids or raw ids. Every child table is deleted from explicitly (SQLite without foreign-key
    enforcement leaves nothing behind either), and so are the call's dead letters (they may hold its data)."""
    keys = sorted(set(resolve(conn, call_ids).values()))
    deleted = 0
    for i in range(0, len(keys), DELETE_CHUNK):
        deleted += _delete_keys(conn, keys[i:i + DELETE_CHUNK])
    return deleted


def _delete_keys(conn: Connection, keys: list[str]) -> int:
    before = rollup_mod.snapshot(conn, keys, lock=True)  # locked: an archiver cannot change them meanwhile
    for table in CHILD_TABLES:
        conn.execute(sql_delete(table).where(table.c.call_id.in_(keys)))
    conn.execute(sql_delete(dead_letters).where(dead_letters.c.call_id.in_(keys)))
    deleted = int(conn.execute(sql_delete(calls).where(calls.c.call_id.in_(keys))).rowcount or 0)
    rollup_mod.apply_changes(conn, before, {})
    return deleted


def prune(conn: Connection, *, older_than_s: float, now: float | None = None, dry_run: bool = False) -> int:
    """Delete every call that started more than ``older_than_s`` ago; returns how many (``dry_run``: how
    many would be, deleting nothing)."""
    if not older_than_s >= 0:
        raise ValueError(f"older_than_s: must be >= 0, got {older_than_s!r}")
    cutoff = (time.time() if now is None else now) - older_than_s
    old = calls.c.started_ts < cutoff
    if dry_run:
        return int(conn.execute(select(func.count()).select_from(calls).where(old)).scalar_one())
    keys = list(conn.execute(select(calls.c.call_id).where(old)).scalars())
    deleted = 0
    for i in range(0, len(keys), DELETE_CHUNK):
        deleted += _delete_keys(conn, keys[i:i + DELETE_CHUNK])
    return deleted
