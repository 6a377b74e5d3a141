"""Constructed archive rows for the ser-calls/queries tests: direct inserts into archive.schema's tables,
every required column filled with a plain default that a test overrides where it matters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine

from archive.db import open_engine
from archive.rollup import Tracked
from archive.schema import alerts, calls, events, label_shares, segments, speakers

#: 2026-11-30 00:00 UTC, a Monday.
MONDAY = 1796083200.0 - 86400.0


def open_archive(url: str) -> Engine:
    """The archive at ``url`` with its schema (migrated by archive.db, as ser-archive does)."""
    return open_engine(url)


def add_call(conn: Connection, call_id: str, *, started_ts: float = MONDAY + 3600, duration_s: float | None = 120.0,
             channels: Sequence[str] = ("agent", "customer"), shares: Mapping[str, Mapping[str, float]] | None = None,
             alert_rules: Sequence[str] = (), n_segments: int = 4, **cols: Any) -> None:
    """One ended call (counted in the trends rollup) with its speakers, label shares (channel -> label ->
    share), alerts and ``n_segments`` result records per channel, plus a turn and an event."""
    length = duration_s or 0.0
    roles = {ch: ch for ch in channels if ch in ("agent", "customer")}
    row: dict[str, Any] = dict(
        call_id=call_id, raw_id=cols.pop("raw_id", f"raw:{call_id}"), source="file", status="ended",
        end_reason="completed", started_ts=started_ts, ended_ts=started_ts + length, duration_s=duration_s,
        channels=list(channels), roles=roles, params={}, model="ser-cnn-lstm@3.1.0", model_version="3.1.0",
        labels=["angry", "calm", "happy", "sad"], segments=n_segments * len(channels), failed=0,
        dynamics={"interruptions": 0}, talk_s=length / 2, non_talk_share=0.5, interruptions=0,
        overtalk_count=0, silence_count=0, customer_score=0.0, customer_trend="NoChange",
        customer_negative_share=0.2, agent_score=1.0, agent_trend="NoChange", agent_negative_share=0.1,
        alerts_fired=len(alert_rules), archived_ts=started_ts + length, updated_ts=started_ts + length)
    row.update(cols)
    with Tracked(conn, [call_id]):  # the trends rollup counts it, as archive.ingest would
        conn.execute(calls.insert(), [row])
    conn.execute(speakers.insert(), [
        dict(call_id=call_id, channel=ch, role=roles.get(ch), segments=n_segments, speech_s=10.0,
             score=row["customer_score"] if ch == "customer" else row["agent_score"], quarters=[0.0, 0.5, None, 1.0],
             trend="NoChange", negative_share=0.2) for ch in channels])
    share_rows = [dict(call_id=call_id, channel=ch, label=label, role=roles.get(ch), share=value)
                  for ch, by_label in (shares or {}).items() for label, value in by_label.items()]
    if share_rows:
        conn.execute(label_shares.insert(), share_rows)
    if alert_rules:
        conn.execute(alerts.insert(), [dict(call_id=call_id, rule=rule, channel="customer", since_s=10.0 + i,
                                            until_s=20.0 + i, opened_ts=started_ts + 10, closed_ts=started_ts + 20,
                                            score=0.7, close_reason="score") for i, rule in enumerate(alert_rules)])
    seg_rows = []
    for ch in channels:
        for seq in range(n_segments):
            seg_rows.append(dict(call_id=call_id, channel=ch, seq=seq, kind="result", start_s=3.0 * seq,
                                 end_s=3.0 * seq + 3.0, label="calm", confidence=0.8, uncertain=False,
                                 probs={"angry": 0.1, "calm": 0.8, "happy": 0.05, "sad": 0.05}, history=seq,
                                 segments=None, error=None, model=row["model"]))
        seg_rows.append(dict(call_id=call_id, channel=ch, seq=0, kind="turn", start_s=0.0, end_s=3.0 * n_segments,
                             label="calm", confidence=0.8, uncertain=False, probs={"calm": 0.8}, history=None,
                             segments=n_segments, error=None, model=None))
    conn.execute(segments.insert(), seg_rows)
    conn.execute(events.insert(), [dict(call_id=call_id, event_key=f"{call_id[:20]}-silence", kind="silence",
                                        ts=started_ts + 5, at_s=5.0, event={"kind": "silence", "start_s": 5.0,
                                                                            "end_s": 7.0})])
