"""A call's stored rows -> its scores: ``speakers``, ``label_shares`` and the headline columns of ``calls``
(formulas: :mod:`archive.scores`, docs/archive.md "Scores"); and closing calls whose producer vanished.
Used by :mod:`archive.ingest` after every write that touches an ended call."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, update

from archive.db import upsert
from archive.rollup import Tracked
from archive.schema import ROLES, alerts, calls, label_shares, segments, speakers
from archive.scores import speaker_scores

#: Most ids in one ``IN (...)`` list.
IN_CHUNK = 500
#: The end reason of a call closed by :func:`close_lost` (as readers of Redis show such a call).
LOST = "lost"


def chunks(ids: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(ids), IN_CHUNK):
        yield ids[i:i + IN_CHUNK]


def refresh_scores(conn: Connection, call_ids: Iterable[str]) -> None:
    """Recompute ``speakers``, ``label_shares``, the calls' headline columns and their ``segments``,
    ``failed`` and ``alerts_fired`` counts from their stored rows (and the trends rollup with them)."""
    ids = sorted(set(call_ids))
    with Tracked(conn, ids):
        rescore(conn, ids)


def rescore(conn: Connection, call_ids: Iterable[str]) -> None:
    """:func:`refresh_scores` without the rollup: for a caller that keeps it (:func:`archive.ingest.write`)."""
    for ids in chunks(sorted(set(call_ids))):
        info = {r.call_id: r for r in conn.execute(
            select(calls.c.call_id, calls.c.duration_s, calls.c.channels, calls.c.roles, calls.c.dynamics)
            .where(calls.c.call_id.in_(ids)))}
        recs: dict[str, list[dict[str, Any]]] = {cid: [] for cid in info}
        for r in conn.execute(select(segments.c.call_id, segments.c.channel, segments.c.seq, segments.c.start_s,
                                     segments.c.end_s, segments.c.probs)
                              .where(segments.c.call_id.in_(ids), segments.c.kind == "result")):
            recs[r.call_id].append({"channel": r.channel, "seq": r.seq, "start_s": r.start_s, "end_s": r.end_s,
                                    "probs": r.probs})
        failed: dict[str, int] = dict(conn.execute(select(segments.c.call_id, func.count()).where(
            segments.c.call_id.in_(ids), segments.c.kind == "failure").group_by(segments.c.call_id)).all())
        alerted: dict[str, int] = dict(conn.execute(select(alerts.c.call_id, func.count()).where(
            alerts.c.call_id.in_(ids)).group_by(alerts.c.call_id)).all())
        conn.execute(delete(label_shares).where(label_shares.c.call_id.in_(ids)))
        conn.execute(delete(speakers).where(speakers.c.call_id.in_(ids)))
        spk_rows: list[dict[str, Any]] = []
        share_rows: list[dict[str, Any]] = []
        heads: list[dict[str, Any]] = []
        for cid, row in sorted(info.items()):
            cols = _score_call(cid, row, recs[cid], spk_rows, share_rows) | {
                "segments": len(recs[cid]), "failed": failed.get(cid, 0), "alerts_fired": alerted.get(cid, 0)}
            heads.append({f"v_{k}": v for k, v in cols.items()} | {"v_call_id": cid})
        if heads:  # one prepared UPDATE executed for every call
            names = [k[2:] for k in heads[0] if k != "v_call_id"]
            conn.execute(update(calls).where(calls.c.call_id == bindparam("v_call_id"))
                         .values({n: bindparam(f"v_{n}") for n in names}), heads)
        upsert(conn, speakers, spk_rows, keys=["call_id", "channel"])
        upsert(conn, label_shares, share_rows, keys=["call_id", "channel", "label"])


def _score_call(cid: str, row: Any, recs: list[dict[str, Any]], spk_rows: list[dict[str, Any]],
                share_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Append the call's speakers and label shares rows; return its headline columns."""
    channels = list(row.channels or [])
    roles = dict(row.roles or {})
    dyn_chans = (row.dynamics or {}).get("channels") or {} if isinstance(row.dynamics, dict) else {}
    scores = speaker_scores(recs, duration_s=row.duration_s or 0.0, channels=channels)
    heads: dict[str, Any] = {f"{role}_{col}": None for role in ROLES for col in ("score", "trend", "negative_share")}
    by_role = {role: ch for ch, role in roles.items()}
    if "customer" not in by_role and not roles and len(scores) == 1:  # a mono call: its one voice is the headline
        by_role["customer"] = next(iter(scores))
    for ch, s in scores.items():
        got = dyn_chans.get(ch)
        d: dict[str, Any] = got if isinstance(got, dict) else {}
        spk_rows.append({"call_id": cid, "channel": ch, "role": roles.get(ch), "segments": s.segments,
                         "speech_s": s.speech_s, "score": s.score,
                         "quarters": None if s.score is None else list(s.quarters), "trend": s.trend,
                         "negative_share": s.negative_share, "talk_s": d.get("talk_s"),
                         "talk_share": d.get("talk_share"), "interruptions": d.get("interruptions")})
        share_rows += [{"call_id": cid, "channel": ch, "label": lab, "role": roles.get(ch), "share": v}
                       for lab, v in s.label_shares.items()]
    for role, ch in by_role.items():
        if ch in scores:
            s = scores[ch]
            heads.update({f"{role}_score": s.score, f"{role}_trend": s.trend,
                          f"{role}_negative_share": s.negative_share})
    return heads




def close_lost(conn: Connection, *, idle_s: float, now: float) -> list[str]:
    """End every call still ``live`` whose row has not been written for ``idle_s`` seconds (its producer
    died without a ``call_ended``): status ``ended``, reason ``lost``, the duration from its last segment,
    ``ended_ts`` its last write; then score it. Returns the call ids closed. A later ``call_ended`` for
    such a call still overwrites all of this. ``idle_s`` must be well above
    :data:`archive.ingest.TOUCH_EVERY_S` (a live call's ``updated_ts`` may be that old)."""
    ids = sorted(conn.execute(select(calls.c.call_id).where(calls.c.status == "live",
                                                            calls.c.updated_ts < now - idle_s)).scalars())
    with Tracked(conn, ids):
        _close(conn, ids, now)
    return ids


def _close(conn: Connection, ids: list[str], now: float) -> None:
    for part in chunks(ids):
        last_end = select(func.max(segments.c.end_s)).where(segments.c.call_id == calls.c.call_id) \
            .scalar_subquery()
        conn.execute(update(calls).where(calls.c.call_id.in_(part), calls.c.status == "live").values(
            status="ended", end_reason=LOST, ended_ts=calls.c.updated_ts,
            duration_s=func.coalesce(calls.c.duration_s, last_end, 0.0), updated_ts=now))
    rescore(conn, ids)
