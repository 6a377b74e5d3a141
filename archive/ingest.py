"""Call events and result records -> archive rows, written idempotently.

The unit of input is what Redis holds: call events (:mod:`callevents.schema`, the ``event`` dicts) and
the records of a call's results stream (:mod:`workers.contract`: ``result``, ``failure``, ``turn`` and
``end`` records; embeddings are never archived). ``ser-archive`` feeds what it reads from the streams,
``ser-produce --archive`` feeds a finished call's events and records held in memory: the same code.

Metadata: ``call_started.params`` keys feed the indexed columns (:data:`META_KEYS`); all params are kept.

Where each input goes (docs/archive.md, "What a call keeps"):

* ``call_started`` -> the call's row: raw id, source, channels, roles, params and the metadata columns,
  model and version, labels, ``started_ts``; ``call_ended`` -> status ``ended``, end reason, ``ended_ts``,
  duration and the dynamics totals (``talk_s``, ``non_talk_share``, ``interruptions``, ``overtalk_count``,
  ``silence_count``); a ``dynamics`` event also sets the totals of a call that has not ended.
* ``result``, ``failure``, ``turn`` records -> :data:`~archive.schema.segments`, every field (those
  without a column in ``extra``); ``end`` records -> :data:`~archive.schema.events` with kind ``end`` (the
  results stream is complete; ``segments`` there is how many results the producer expected).
* ``alert_opened``/``alert_closed`` -> :data:`~archive.schema.alerts` and :data:`~archive.schema.events`;
  ``dynamics``, ``silence``, ``overtalk`` -> events. ``trend`` events are validated and dropped: they are
  a live view of what the segments hold.

Order does not matter: the archiver reads the events stream and each results stream independently, so a
call's records (or its ``call_ended``) may arrive before its ``call_started``. Any input for an unknown
call first inserts a **placeholder** row (``status`` live, empty channels/params, ``started_ts`` estimated
from what it has); ``call_started`` later fills it in. Each kind of input updates only its own columns,
so whichever arrives last, the row ends the same. Counts are recounted from the stored rows
(``alerts_fired`` when alerts arrive; ``segments`` and ``failed`` once the call has ended: 0 while it is
live),
and the scores of every touched call that has ended are recomputed from its stored segments
(:func:`refresh_scores`): replaying any entry changes nothing but ``updated_ts``. The trends rollup
(:mod:`archive.rollup`) moves with every change of a call's rolled-up columns, in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite

from archive import rollup, validate
from archive.db import begin_write, upsert
from archive.rescore import chunks, close_lost, refresh_scores, rescore
from archive.schema import ROLES, alerts, calls, dead_letters, events, segments
from callevents import schema as ev
from models.ids import key_id

#: Which ``params`` names feed each metadata column (first present wins; compared case-insensitively).
META_KEYS: dict[str, tuple[str, ...]] = {
    "agent": ("agent", "agent_id", "agentid", "agent_name"),
    "queue": ("queue", "queue_id", "queueid", "queue_name", "queuename"),
    "direction": ("direction",),
    "tenant": ("tenant", "tenant_id", "tenantid", "organizationid"),
}
#: Params naming the channel that has a role, e.g. ``--meta customer_channel=ch1`` for a file whose
#: channels are ``ch0``/``ch1`` (a channel *named* ``agent`` or ``customer`` has that role anyway).
ROLE_PARAMS = {"agent_channel": "agent", "customer_channel": "customer"}
#: Longest payload kept in a dead letter (characters).
MAX_DEAD_PAYLOAD = 8192
#: Widths of the metadata columns (longer values are cut; the params keep them whole).
META_WIDTH = {"agent": 128, "queue": 128, "direction": 16, "tenant": 128}
#: Events stored in :data:`archive.schema.events` (besides ``end`` records).
STORED_EVENTS = (ev.ALERT_OPENED, ev.ALERT_CLOSED, ev.DYNAMICS, ev.SILENCE, ev.OVERTALK)
SEGMENT_KINDS = ("result", "failure", "turn")
#: A live call's ``updated_ts`` is rewritten by a write only when older than this (seconds): it says the
#: call is still being written (:func:`close_lost`) without rewriting every row at every batch.
TOUCH_EVERY_S = 10.0
__all__ = ["META_KEYS", "Batch", "archive_call", "close_lost", "dead_letter", "event_key", "refresh_scores", "write"]


def event_key(event: Mapping[str, Any]) -> str:
    """The event's natural key: a digest of its canonical JSON (32 hex characters)."""
    canon = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canon.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass
class Batch:
    """Rows to write in one transaction, gathered from events and records (any calls, any order)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # each with its call id in "stream_id"

    def add_event(self, event: Mapping[str, Any]) -> None:
        """Validate and keep one call event; ValueError (the reason) when it is not a valid event.
        ``trend`` events are valid but not kept (not archived)."""
        checked = validate.check_event(event)
        if checked["kind"] != ev.TREND:
            self.events.append(checked)

    def add_record(self, call_id: str, record: Mapping[str, Any]) -> None:
        """Validate and keep one record of call ``call_id``'s results stream; ValueError when invalid.
        The record's ``embedding`` is dropped; a record of another call's stream is refused."""
        checked = validate.check_record(call_id, record)
        if key_id(checked["stream_id"]) != key_id(call_id):
            raise ValueError(f"record of call {checked['stream_id']!r:.80} in the results stream of {call_id!r:.80}")
        self.records.append(checked)

    def __len__(self) -> int:
        return len(self.events) + len(self.records)


# --- rows --------------------------------------------------------------------------------------------
def _meta(params: Mapping[str, Any]) -> dict[str, str | None]:
    lower = {str(k).lower(): str(v) for k, v in params.items()}
    out: dict[str, str | None] = {}
    for col, names in META_KEYS.items():
        value = next((lower[n] for n in names if lower.get(n)), None)
        out[col] = value[:META_WIDTH[col]] if value is not None else None
    return out


def roles_of(channels: Iterable[str], params: Mapping[str, Any]) -> dict[str, str]:
    """channel -> role: a channel named ``agent``/``customer``, or named by a :data:`ROLE_PARAMS` param."""
    chans = list(channels)
    roles = {c: c for c in chans if c in ROLES}
    for name, role in ROLE_PARAMS.items():
        ch = params.get(name)
        if isinstance(ch, str) and ch in chans:
            roles = {c: r for c, r in roles.items() if r != role}
            roles[ch] = role
    return roles


def _model_version(model: str) -> str:
    return model.rpartition("@")[2][:32] if "@" in model else ""


def _started_row(e: Mapping[str, Any], now: float) -> dict[str, Any]:
    params = {str(k): str(v) for k, v in (e.get("params") or {}).items()}
    model = str(e.get("model") or "")
    return {"call_id": key_id(e["call_id"]), "raw_id": str(e.get("raw_call_id") or e["call_id"]),
            "source": str(e.get("source") or ""), "channels": list(e["channels"]),
            "roles": roles_of(e["channels"], params), "params": params, **_meta(params), "model": model,
            "model_version": _model_version(model), "labels": list(e.get("labels") or []),
            "started_ts": float(e["ts"]), "updated_ts": now}


def dynamics_columns(dyn: Mapping[str, Any] | None, duration_s: float | None) -> dict[str, Any]:
    """The call's dynamics columns from a ``dynamics`` event or ``call_ended.dynamics`` totals."""
    if not isinstance(dyn, Mapping):
        return {"dynamics": None, "talk_s": None, "non_talk_share": None, "interruptions": None,
                "overtalk_count": None, "silence_count": None}
    chans = [c for c in (dyn.get("channels") or {}).values() if isinstance(c, Mapping)]
    dur = duration_s if duration_s else dyn.get("duration_s")
    non_talk = dyn.get("non_talk_s")
    inter = [c["interruptions"] for c in chans if isinstance(c.get("interruptions"), int)]
    return {"dynamics": dict(dyn), "talk_s": round(sum(float(c.get("talk_s") or 0.0) for c in chans), 3),
            "non_talk_share": round(float(non_talk) / float(dur), 4) if non_talk is not None and dur else None,
            "interruptions": sum(inter) if inter else None,
            "overtalk_count": (dyn.get("overtalk") or {}).get("count"),
            "silence_count": (dyn.get("silence") or {}).get("count")}


def _ended_row(e: Mapping[str, Any], now: float) -> dict[str, Any]:
    duration = float(e["duration_s"])
    return {"call_id": key_id(e["call_id"]), "status": "ended", "end_reason": e.get("reason"),
            "ended_ts": float(e["ts"]), "duration_s": duration, **dynamics_columns(e.get("dynamics"), duration),
            "updated_ts": now}


def _segment_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    extra = None if validate.SEGMENT_FIELDS.issuperset(rec) else \
        {k: v for k, v in rec.items() if k not in validate.SEGMENT_FIELDS}
    return {"call_id": key_id(rec["stream_id"]), "channel": rec["channel"], "seq": rec["seq"], "kind": rec["kind"],
            "start_s": float(rec["start_s"]), "end_s": float(rec["end_s"]), "label": rec.get("label"),
            "confidence": rec.get("confidence"), "uncertain": rec.get("uncertain"), "probs": rec.get("probs"),
            "history": rec.get("history"), "segments": rec.get("segments") if rec["kind"] == "turn" else None,
            "error": rec.get("error"), "model": rec.get("model"), "extra": extra or None}


def _at_s(e: Mapping[str, Any]) -> float | None:
    for name in ("at_s", "until_s", "start_s", "since_s", "duration_s"):
        if isinstance(e.get(name), (int, float)) and not isinstance(e.get(name), bool):
            return float(e[name])
    return None


def _event_row(e: Mapping[str, Any], call_id: str, now: float) -> dict[str, Any]:
    return {"call_id": call_id, "event_key": event_key(e), "kind": e["kind"], "ts": float(e.get("ts", now)),
            "at_s": _at_s(e), "event": dict(e)}


def _placeholders(batch: Batch, now: float) -> dict[str, dict[str, Any]]:
    """A minimal row for every call the batch names, its start estimated from what the batch has."""
    rows: dict[str, dict[str, Any]] = {}

    def note(raw: str, start: float, model: str | None = None) -> None:
        cid = key_id(raw)
        row = rows.setdefault(cid, {"call_id": cid, "raw_id": raw, "started_ts": start, "channels": [],
                                    "roles": {}, "params": {}, "labels": [], "model": "", "model_version": "",
                                    "archived_ts": now, "updated_ts": now})
        row["started_ts"] = min(row["started_ts"], start)
        if model and not row["model"]:
            row["model"], row["model_version"] = model[:128], _model_version(model)

    for e in batch.events:
        note(str(e["call_id"]), float(e["ts"]) - (_at_s(e) or 0.0))
    for r in batch.records:
        note(str(r["stream_id"]), now - float(r.get("end_s") or r.get("duration_s") or 0.0), r.get("model"))
    return rows


# --- writing -----------------------------------------------------------------------------------------
def write(conn: Connection, batch: Batch, *, now: float | None = None) -> set[str]:
    """Upsert the batch's rows (calls, segments, events, alerts) in ``conn``'s transaction; recompute the
    scores (:mod:`archive.scores`) of every touched call that has ended. Idempotent: writing a batch twice,
    or entries again in later batches, changes nothing. Returns the call ids touched."""
    now = time.time() if now is None else float(now)
    base = _placeholders(batch, now)
    if not base:
        return set()
    if conn.dialect.name == "postgresql":
        ended, before = _claim_calls(conn, base)
    else:  # one writer at a time (archive.db.begin_write): read what exists, add the others
        ended, before = _lock_calls(conn, base)  # the calls archived already
        missing = {cid: row for cid, row in base.items() if cid not in before}
        if missing:  # placeholders only for the others (re-sending every call's JSON columns was a batch's cost)
            _insert_placeholders(conn, missing)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in batch.events:
        by_kind.setdefault(e["kind"], []).append(e)
    # each kind updates only its own columns (the placeholder's fill what an INSERT needs: NOT NULL
    # is checked before ON CONFLICT)
    for kind, make in ((ev.CALL_STARTED, _started_row), (ev.CALL_ENDED, _ended_row)):
        rows = [make(e, now) for e in by_kind.get(kind, [])]
        if rows:
            upsert(conn, calls, [base[r["call_id"]] | r for r in rows], keys=["call_id"], update=list(rows[0])[1:])
    _write_dynamics(conn, by_kind.get(ev.DYNAMICS, []), now)
    upsert(conn, segments, [_segment_row(r) for r in batch.records if r["kind"] in SEGMENT_KINDS],
           keys=["call_id", "channel", "seq", "kind"])
    rows = [_event_row(e, key_id(e["call_id"]), now) for e in batch.events if e["kind"] in STORED_EVENTS]
    rows += [_event_row(r, key_id(r["stream_id"]), now) for r in batch.records if r["kind"] == "end"]
    upsert(conn, events, rows, keys=["call_id", "event_key"], update=())
    _write_alerts(conn, by_kind.get(ev.ALERT_OPENED, []), by_kind.get(ev.ALERT_CLOSED, []))
    touched = set(base)
    alerted = {key_id(e["call_id"]) for kind in (ev.ALERT_OPENED, ev.ALERT_CLOSED) for e in by_kind.get(kind, [])}
    _touch(conn, touched, alerted, now)
    rescore(conn, ended | {key_id(e["call_id"]) for e in by_kind.get(ev.CALL_ENDED, [])})
    rollup.apply_changes(conn, before, rollup.snapshot(conn, touched))
    return touched


def _insert_placeholders(conn: Connection, rows: Mapping[str, dict[str, Any]]) -> set[str]:
    """Insert the calls not archived yet (placeholders); returns the ids this transaction inserted."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(calls).on_conflict_do_nothing(index_elements=["call_id"]).returning(calls.c.call_id)
    return set(conn.execute(stmt, [rows[cid] for cid in sorted(rows)]).scalars())


def _claim_calls(conn: Connection, base: Mapping[str, dict[str, Any]]) -> tuple[set[str], dict[str, dict[str, Any]]]:
    """PostgreSQL: every call of the batch inserted (a placeholder) or, when archived already, locked, in ONE
    statement per chunk, in key order: writers side by side (several archivers) touching the same calls take
    their row locks in the same order and wait for each other instead of deadlocking (locking the existing
    rows first and inserting the others after could deadlock: each writer held one the other wanted).
    Returns the calls that had ended already and the rolled-up columns (:data:`archive.rollup.COLUMNS`) of
    those archived before this write (a call this transaction inserted counts in the rollup from its first
    row)."""
    ended: set[str] = set()
    before: dict[str, dict[str, Any]] = {}
    for ids in chunks(sorted(base)):
        insert = postgresql.insert(calls)
        stmt = insert.on_conflict_do_update(index_elements=["call_id"], set_={"call_id": insert.excluded.call_id}) \
            .returning(calls.c.call_id, calls.c.status, *(calls.c[c] for c in rollup.COLUMNS),
                       literal_column("(xmax = 0)").label("inserted"))
        for r in conn.execute(stmt, [base[cid] for cid in ids]):
            if r.inserted:
                continue
            if r.status == "ended":
                ended.add(r.call_id)
            before[r.call_id] = {c: r._mapping[c] for c in rollup.COLUMNS}
    return ended, before


def _lock_calls(conn: Connection, call_ids: Iterable[str]) -> tuple[set[str], dict[str, dict[str, Any]]]:
    """The batch's calls that have ended already, and every call's rolled-up columns
    (:data:`archive.rollup.COLUMNS`) before this write. On PostgreSQL their rows are locked at once, in key
    order: writers side by side (several archivers) touching the same calls then wait for each other
    instead of deadlocking. (SQLite has one writer at a time: :func:`archive.db.begin_write`.)"""
    ended: set[str] = set()
    before: dict[str, dict[str, Any]] = {}
    for ids in chunks(sorted(call_ids)):
        query = select(calls.c.call_id, calls.c.status, *(calls.c[c] for c in rollup.COLUMNS)) \
            .where(calls.c.call_id.in_(ids)).order_by(calls.c.call_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        for r in conn.execute(query):
            if r.status == "ended":
                ended.add(r.call_id)
            before[r.call_id] = {c: r._mapping[c] for c in rollup.COLUMNS}
    return ended, before


def _write_dynamics(conn: Connection, dyn_events: list[dict[str, Any]], now: float) -> None:
    """The newest ``dynamics`` event's totals on each call that has not ended (call_ended's totals win)."""
    newest: dict[str, dict[str, Any]] = {}
    for e in dyn_events:
        cid = key_id(e["call_id"])
        if cid not in newest or float(e["at_s"]) >= float(newest[cid]["at_s"]):
            newest[cid] = e
    rows: list[dict[str, Any]] = []
    for ids in chunks(sorted(newest)):
        have = conn.execute(select(calls.c.call_id, calls.c.status, calls.c.dynamics)
                            .where(calls.c.call_id.in_(ids))).all()
        for cid, status, stored in have:
            e = newest[cid]
            if status == "ended" or (isinstance(stored, dict) and float(stored.get("at_s", -1.0)) > float(e["at_s"])):
                continue
            dyn = {k: v for k, v in e.items() if k not in ("kind", "call_id", "ts")}
            rows.append({f"v_{k}": v for k, v in dynamics_columns(dyn, None).items()} | {"v_call_id": cid})
    if rows:  # one prepared UPDATE for every call (building a statement per call was most of a batch's cost)
        names = [k[2:] for k in rows[0] if k != "v_call_id"]
        conn.execute(update(calls).where(calls.c.call_id == bindparam("v_call_id"))
                     .values({n: bindparam(f"v_{n}") for n in names} | {"updated_ts": now}), sorted(
                         rows, key=lambda r: r["v_call_id"]))


def _write_alerts(conn: Connection, opened: list[dict[str, Any]], closed: list[dict[str, Any]]) -> None:
    """``alert_opened`` inserts (or completes) an alert, ``alert_closed`` closes it; either may come first."""
    def key(e: Mapping[str, Any]) -> dict[str, Any]:
        return {"call_id": key_id(e["call_id"]), "rule": e["rule"], "channel": e["channel"],
                "since_s": float(e["since_s"])}

    upsert(conn, alerts, [key(e) | {"opened_ts": float(e["ts"]), "score": e.get("score")} for e in opened],
           keys=["call_id", "rule", "channel", "since_s"])
    upsert(conn, alerts, [key(e) | {"opened_ts": float(e["ts"]), "until_s": float(e["until_s"]),
                                    "closed_ts": float(e["ts"]), "close_reason": e.get("reason")} for e in closed],
           keys=["call_id", "rule", "channel", "since_s"], update=["until_s", "closed_ts", "close_reason"])


def _touch(conn: Connection, call_ids: Iterable[str], alerted: set[str], now: float) -> None:
    """The calls' ``updated_ts`` (at most :data:`TOUCH_EVERY_S` old), and ``alerts_fired`` of those with
    alert events (recounted). ``segments``
    and ``failed`` are recounted by :func:`refresh_scores` once a call has ended: recounting a long live
    call's segments at every batch would cost in proportion to its length, each time."""
    count = select(func.count()).select_from(alerts).where(alerts.c.call_id == calls.c.call_id).scalar_subquery()
    rest = sorted(set(call_ids) - alerted)
    for ids in chunks(rest):  # rewriting every live call's row at every batch is most of a batch's cost
        conn.execute(update(calls).where(calls.c.call_id.in_(ids), calls.c.updated_ts < now - TOUCH_EVERY_S)
                     .values(updated_ts=now))
    for ids in chunks(sorted(alerted)):
        conn.execute(update(calls).where(calls.c.call_id.in_(ids)).values(alerts_fired=count, updated_ts=now))


def _plain(obj: Any) -> Any:
    """``obj`` with bytes decoded (a Redis entry's fields), fit for JSON."""
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, Mapping):
        return {str(_plain(k)): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def dead_letter(conn: Connection, *, stream: str, entry_id: str, reason: str, payload: Any,
                call_id: str | None = None, now: float | None = None) -> None:
    """Keep an entry that could not be archived (idempotent per stream and entry id)."""
    plain = _plain(payload)
    text = plain if isinstance(plain, str) else json.dumps(plain, default=str, separators=(",", ":"), sort_keys=True)
    upsert(conn, dead_letters, [{"stream": str(stream)[:256], "entry_id": str(entry_id)[:64],
                                 "call_id": key_id(call_id) if call_id else None, "reason": " ".join(reason.split()),
                                 "payload": text[:MAX_DEAD_PAYLOAD], "ts": time.time() if now is None else now}],
           keys=["stream", "entry_id"], update=())


def archive_call(engine: Engine, *, events: Iterable[Mapping[str, Any]], records: Iterable[Mapping[str, Any]],
                 call_id: str) -> None:
    """Archive one finished call held in memory (``ser-produce --archive``): its events in order and its
    records, in one transaction. ValueError (the reason) when an event or record is invalid: nothing is
    written then."""
    batch = Batch()
    for e in events:
        batch.add_event(e)
    for r in records:
        batch.add_record(call_id, r)
    with begin_write(engine) as conn:
        write(conn, batch)
