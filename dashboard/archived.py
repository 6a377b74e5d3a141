"""What the dashboard reads from the call archive (``--archive URL``; docs/archive.md): a page of calls
(History), per-group trends (Trends) and one call, rebuilt into what the call page renders.

The dashboard only reads: its engine is opened without migrating (:func:`archive.db.open_engine` with
``migrate=False``) once per process, and :func:`schema_problem` says at start when the schema is missing or
at another revision. Every query runs in Starlette's threadpool (the database drivers block), so the
live pages' Server-Sent Events never wait on the database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, inspect
from starlette.concurrency import run_in_threadpool

from archive import queries
from archive.filters import CallFilter
from archive.schema import SCHEMA_REVISION
from dashboard.history import Query

T = TypeVar("T")
#: What a dynamics total needs for the call page's Conversation section (callevents.schema, ``dynamics``).
DYNAMICS_KEYS = ("duration_s", "channels", "non_talk_s", "silence")


def schema_problem(engine: Engine) -> str | None:
    """One line saying why the archive at ``engine`` cannot be read as this dashboard expects, or None."""
    from archive.db import current_revision  # Alembic: only at start

    with engine.connect() as conn:
        if not inspect(conn).has_table("calls"):
            return "the archive has no tables yet (ser-archive creates them when it starts)"
        found = current_revision(conn)
    if found != SCHEMA_REVISION:
        return (f"the archive's schema is at revision {found or 'none'}, this dashboard reads {SCHEMA_REVISION}: "
                "upgrade ser-archive (it migrates at start) or this dashboard")
    return None


class Archive:
    """The archive's reads for one dashboard process (one engine, a pool of connections)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def _run(self, fn: Callable[[Connection], T]) -> T:
        def work() -> T:
            with self.engine.connect() as conn:
                return fn(conn)

        return await run_in_threadpool(work)

    async def history(self, q: Query) -> queries.Page:
        """The page of calls a valid History query asks for (:func:`dashboard.history.read_history`)."""
        flt, limit = q.flt or CallFilter(), q.extra["limit"]
        return await self._run(lambda conn: queries.search(
            conn, flt, sort=q.extra["sort"], descending=q.extra["order"] == "desc", limit=limit,
            offset=(q.extra["page"] - 1) * limit))

    async def trends_of(self, q: Query) -> list[dict[str, Any]]:
        """The rows a valid Trends query asks for (:func:`dashboard.trends.read_trends`)."""
        flt = q.flt or CallFilter()
        return await self._run(lambda conn: queries.trends(conn, flt, by=q.extra["by"], period=q.extra["period"]))

    async def call(self, call_id: str) -> dict[str, Any] | None:
        """The call as :func:`dashboard.pages.call_page` takes it (see :func:`page_data`), or None."""
        shown = await self._run(lambda conn: queries.show(conn, call_id))
        return None if shown is None else page_data(shown)


def _record(row: Mapping[str, Any], call_id: str) -> dict[str, Any]:
    """A ``segments`` row as the result/turn/failure record it was archived from."""
    out: dict[str, Any] = {**(row.get("extra") or {}), "kind": row.get("kind") or "result", "stream_id": call_id,
                           "channel": str(row["channel"]), "seq": int(row["seq"]), "start_s": float(row["start_s"]),
                           "end_s": float(row["end_s"])}
    for key in ("label", "confidence", "probs", "model", "uncertain", "segments", "error", "history"):
        if row.get(key) is not None:
            out[key] = row[key]
    return out


def _event(item: Mapping[str, Any]) -> dict[str, Any]:
    """An ``events`` row's event (or the event itself)."""
    inner = item.get("event")
    return dict(inner) if isinstance(inner, Mapping) else dict(item)


def _alert_events(alerts: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``alert_opened``/``alert_closed`` events from ``alerts`` rows (when the events were not kept)."""
    out: list[dict[str, Any]] = []
    for a in alerts:
        out.append({"kind": "alert_opened", "rule": a["rule"], "channel": a["channel"], "since_s": a["since_s"],
                    "score": a.get("score") or 0.0, "threshold": "?", "window_s": "?", "ts": a.get("opened_ts")})
        if a.get("until_s") is not None:
            out.append({"kind": "alert_closed", "rule": a["rule"], "channel": a["channel"], "since_s": a["since_s"],
                        "until_s": a["until_s"], "score": None, "threshold": "?", "reason": a.get("close_reason"),
                        "ts": a.get("closed_ts")})
    return out


def page_data(shown: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`archive.queries.show`'s call rebuilt as :meth:`dashboard.store.Store.call` returns a call from
    Redis (state, events, records), plus ``archived``: the call row and its speakers' scores per quarter."""
    call = dict(shown["call"])
    call_id = str(call["call_id"])
    channels = [str(c) for c in call.get("channels") or []]
    records = [_record(r, call_id) for r in list(shown.get("segments") or []) + list(shown.get("turns") or [])]
    records.sort(key=lambda r: (float(r["start_s"]), r["channel"], r["seq"]))
    events = [_event(e) for e in shown.get("events") or []]
    if not any(str(e.get("kind", "")).startswith("alert_") for e in events):
        events += _alert_events(list(shown.get("alerts") or []))
    events.sort(key=lambda e: (float(e.get("ts") or 0.0), float(e.get("at_s", e.get("since_s", 0.0)) or 0.0)))
    duration = float(call.get("duration_s") or max([r["end_s"] for r in records] + [0.0]))
    dyn = call.get("dynamics")
    if not (isinstance(dyn, Mapping) and all(k in dyn for k in DYNAMICS_KEYS)):
        dyn = None  # not the totals the Conversation section shows (a call ended before any were settled)
    ended = {"kind": "call_ended", "call_id": call_id, "ts": call.get("ended_ts"), "duration_s": duration,
             "reason": call.get("end_reason") or ("archived" if call.get("status") == "ended" else "no end archived"),
             "dynamics": dyn}
    events = [e for e in events if e.get("kind") not in ("call_started", "call_ended")] + [ended]
    raw = call.get("raw_id")
    state = {"call_id": call_id, "raw_call_id": raw if raw and raw != call_id else None,
             "source": call.get("source") or "", "channels": channels, "params": call.get("params") or {},
             "model": call.get("model") or "", "started": call.get("started_ts"), "ended": ended}
    started = {"kind": "call_started", "call_id": call_id, "labels": list(call.get("labels") or [])}
    return {"state": state, "events": [started, *events], "records": records, "events_id": "0-0",
            "results_id": "0-0", "archived": {"call": call, "speakers": list(shown.get("speakers") or [])}}
