"""``ser-calls show``'s text: a call's summary, per-speaker scores per quarter, alerts and a timeline."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

#: Most timeline lines shown (turns, else segments, with silences, overtalks and alerts among them).
MAX_TIMELINE_LINES = 400
_TIMELINE_EVENTS = ("silence", "overtalk")


def _ts(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _at(seconds: float | None) -> str:
    if seconds is None:
        return "  -  "
    m, s = divmod(max(seconds, 0.0), 60)
    return f"{int(m):02d}:{s:04.1f}"


def _score(value: float | None) -> str:
    return "   -" if value is None else f"{value:+.2f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def summary_lines(call: dict[str, Any]) -> list[str]:
    meta = ", ".join(f"{k} {call[k]}" for k in ("agent", "queue", "direction", "tenant") if call.get(k))
    lines = [
        f"call      {call['raw_id']}  (key {call['call_id']})",
        f"source    {call['source'] or '-'}  status {call['status']}"
        + (f" ({call['end_reason']})" if call.get("end_reason") else ""),
        f"started   {_ts(call['started_ts'])}  duration {_at(call.get('duration_s'))}",
        f"metadata  {meta or '-'}",
        f"model     {call['model'] or '-'}  segments {call['segments']}  failed {call['failed']}",
        f"customer  score {_score(call.get('customer_score'))}  trend {call.get('customer_trend') or '-'}  "
        f"negative {_share(call.get('customer_negative_share'))}",
        f"agent     score {_score(call.get('agent_score'))}  trend {call.get('agent_trend') or '-'}  "
        f"negative {_share(call.get('agent_negative_share'))}",
        f"dynamics  non-talk {_share(call.get('non_talk_share'))}  interruptions "
        f"{call.get('interruptions') if call.get('interruptions') is not None else '-'}  overtalks "
        f"{call.get('overtalk_count') if call.get('overtalk_count') is not None else '-'}  silences "
        f"{call.get('silence_count') if call.get('silence_count') is not None else '-'}",
    ]
    params = call.get("params") or {}
    if params:
        lines.append("params    " + ", ".join(f"{k}={v}" for k, v in sorted(params.items())))
    return lines


def speaker_lines(speakers: list[dict[str, Any]]) -> list[str]:
    lines = ["", "speaker       role      score   Q1     Q2     Q3     Q4    trend              negative  talk"]
    for s in speakers:
        quarters = list(s.get("quarters") or [None] * 4)
        lines.append(f"{s['channel'][:12]:<12}  {(s.get('role') or '-'):<8}  {_score(s.get('score'))}  "
                     + " ".join(f"{_score(q):>6}" for q in quarters)
                     + f"  {(s.get('trend') or '-'):<17}  {_share(s.get('negative_share')):>8}  "
                     f"{_share(s.get('talk_share'))}")
    return lines


def alert_lines(alerts: list[dict[str, Any]]) -> list[str]:
    lines = ["", f"alerts ({len(alerts)})"]
    for a in alerts:
        until = _at(a.get("until_s")) if a.get("until_s") is not None else "open "
        lines.append(f"  {_at(a['since_s'])}-{until}  {a['rule']}  {a['channel']}  score {_score(a.get('score'))}"
                     + (f"  closed by {a['close_reason']}" if a.get("close_reason") else ""))
    return lines


def timeline_lines(found: dict[str, Any]) -> list[str]:
    items: list[tuple[float, str]] = []
    spoken = found["turns"] or found["segments"]
    for s in spoken:
        if s["kind"] == "failure":
            text = f"failed: {s.get('error') or '-'}"
        else:
            conf = f" {s['confidence']:.2f}" if s.get("confidence") is not None else ""
            text = f"{s.get('label') or '-'}{conf}" + (" (uncertain)" if s.get("uncertain") else "")
            if s["kind"] == "turn" and s.get("segments"):
                text += f"  [{s['segments']} segments]"
        items.append((s["start_s"], f"{_at(s['start_s'])}-{_at(s['end_s'])}  {s['channel'][:12]:<12}  {text}"))
    for e in found["events"]:
        if e["kind"] in _TIMELINE_EVENTS:
            ev = e.get("event") or {}
            start, end = ev.get("start_s", e.get("at_s")), ev.get("end_s")
            items.append((start or 0.0, f"{_at(start)}-{_at(end)}  {'':<12}  ({e['kind']})"))
    for a in found["alerts"]:
        items.append((a["since_s"], f"{_at(a['since_s'])}        {a['channel'][:12]:<12}  ALERT {a['rule']}"))
    items.sort(key=lambda item: item[0])
    title = "turns" if found["turns"] else "segments"
    lines = ["", f"timeline ({title}, silences, overtalks, alerts)"]
    lines += ["  " + text for _, text in items[:MAX_TIMELINE_LINES]]
    if len(items) > MAX_TIMELINE_LINES:
        lines.append(f"  ... {len(items) - MAX_TIMELINE_LINES} more (--format json has everything)")
    return lines


def render(found: dict[str, Any]) -> str:
    """The text of ``ser-calls show`` for :func:`archive.queries.show`'s result."""
    return "\n".join(summary_lines(found["call"]) + speaker_lines(found["speakers"]) + alert_lines(found["alerts"])
                     + timeline_lines(found))
