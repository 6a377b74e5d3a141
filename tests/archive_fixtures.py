"""Seeded synthetic calls for the archive tests: the call events and results-stream records a real
call would leave in Redis (shapes as :mod:`callevents.schema` and :mod:`workers.contract` define them),
without running the pipeline. ``make_call`` gives both lists; ``events``/``records`` are in the order
the pipeline writes them."""

from __future__ import annotations

import random
from typing import Any

LABELS = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad"]
MODEL = "ser-cnn-lstm@3.1.0"


def _probs(rng: random.Random) -> dict[str, float]:
    w = [rng.random() ** 3 for _ in LABELS]
    total = sum(w)
    return {lab: round(x / total, 6) for lab, x in zip(LABELS, w, strict=True)}


def make_call(call_id: str = "CA1", *, seed: int = 0, segments: int = 12, channels: tuple[str, ...] = ("customer",
              "agent"), t0: float = 1_765_000_000.0, params: dict[str, str] | None = None, ended: bool = True,
              history: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(events, records) of one call: ``segments`` results per channel 3 s apart, a failure, turns,
    the ``end`` record; call_started, dynamics, silence, overtalk, an alert opened and closed, trends,
    call_ended (``ended``)."""
    rng = random.Random(seed)
    params = {"agent_id": f"agent-{seed % 3}", "Queue": "billing", "direction": "inbound", "tenant": "acme",
              "campaign": "winter"} if params is None else params
    duration = segments * 3.0 + 1.0

    def event(kind: str, at: float, **fields: Any) -> dict[str, Any]:
        return {"kind": kind, "call_id": call_id, "ts": round(t0 + at, 3), **fields}

    records: list[dict[str, Any]] = []
    for c, ch in enumerate(channels):
        for i in range(segments):
            start = round(i * 3.0 + c * 0.5, 3)
            p = _probs(rng)
            label = max(p, key=lambda k: p[k])
            rec = {"stream_id": call_id, "channel": ch, "seq": i, "start_s": start, "end_s": round(start + 2.5, 3),
                   "kind": "result", "label": label, "confidence": p[label], "uncertain": p[label] < 0.5,
                   "probs": p, "model": MODEL}
            if history:
                rec["history"] = min(i, 10)
            records.append(rec)
    records.append({"stream_id": call_id, "channel": channels[0], "seq": segments, "start_s": duration - 1.0,
                    "end_s": duration, "kind": "failure", "error": "model mismatch: job wants x, worker has y",
                    "model": MODEL})
    for c, ch in enumerate(channels):
        p = _probs(rng)
        label = max(p, key=lambda k: p[k])
        records.append({"kind": "turn", "stream_id": call_id, "channel": ch, "seq": 0, "start_s": c * 0.5,
                        "end_s": 8.0, "segments": 3, "label": label, "confidence": p[label],
                        "uncertain": False, "probs": p, "model": MODEL})
    dyn_channels = {ch: {"talk_s": round(duration * 0.4, 3), "talk_share": 0.4, "level_db": -23.0, "raised_s": 0.0,
                         "rate_sps": 4.1, "rate_rel": None, "interruptions": c + 1, "yielded": c}
                    for c, ch in enumerate(channels)}
    totals = {"duration_s": duration, "channels": dyn_channels, "non_talk_s": round(duration * 0.25, 3),
              "silence": {"min_s": 5.0, "count": 2, "total_s": 12.0, "longest_s": 7.0},
              "overtalk": {"min_s": 0.5, "count": 3, "total_s": 2.1}}
    records.append({"kind": "end", "stream_id": call_id, "segments": segments * len(channels),
                    "duration_s": duration, "model": MODEL,
                    "channels": {ch: {"segments": segments, "skipped": 0} for ch in channels},
                    "dynamics": {**totals, "silences": [[3.0, 10.0], [20.0, 25.0]]}})
    events = [
        event("call_started", 0.0, source="twilio", channels=list(channels), params=params, model=MODEL,
              labels=LABELS),
        event("trend", 5.0, channel=channels[0], at_s=5.0, window_s=20.0, segments=2, shares={"calm": 1.0},
              negativity=0.1, last={"seq": 1, "start_s": 3.0, "end_s": 5.5, "label": "calm", "confidence": 0.7}),
        event("alert_opened", 6.0, rule="customer_negative", channel=channels[0], since_s=6.0, window_s=20.0,
              score=0.65, threshold=0.6, labels=["angry", "sad"]),
        event("dynamics", 10.0, at_s=10.0, **{**totals, "duration_s": 10.0}),
        event("silence", 10.0, start_s=3.0, end_s=10.0, duration_s=7.0),
        event("overtalk", 12.0, start_s=11.0, end_s=12.0, duration_s=1.0, interruption=True,
              by=channels[-1], over=[channels[0]], yielded=False),
        event("alert_closed", 15.0, rule="customer_negative", channel=channels[0], since_s=6.0, until_s=15.0,
              window_s=20.0, score=0.35, threshold=0.4, labels=["angry", "sad"], reason="score"),
    ]
    if ended:
        events.append(event("call_ended", duration, reason="completed", duration_s=duration,
                            segments=segments * len(channels), failed=1, summary={},
                            dynamics={**totals, "silences": [[3.0, 10.0]], "overtalks": [[11.0, 12.0]]}))
    return events, records
