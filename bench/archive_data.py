"""Synthetic archived calls for ``bench.archive``: seeded, with contact-centre-like distributions, bulk
inserted straight into the archive's tables (PostgreSQL ``COPY``, SQLite ``executemany``).

Per call: a start in the last ``days`` days (weekdays, business hours UTC), an agent (a few hundred, some
busier than others), one of 12 queues and 4 tenants (skewed), a direction, a log-normal duration (median
5 min), customer/agent scores, trend, negative shares, interruptions, non-talk share; two speakers
(agent, customer) with a share of each of the 7 labels; silence/overtalk events; alerts where the scores
or dynamics would fire one; and about :data:`RECORDS_PER_CALL` segment records (results over both
channels, a turn per ~8 results, a rare failure).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Engine, Table

from archive.schema import alerts, calls, events, label_shares, segments, speakers
from archive.scores import SCALE, TREND_STEPS

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
NEGATIVE = {"sad", "angry", "fearful", "disgust"}
QUEUES = ("billing", "sales", "support", "tech-l1", "tech-l2", "retention", "collections", "claims", "orders",
          "returns", "vip", "outbound-campaign")
TENANTS = ("acme", "globex", "initech", "umbrella")
TENANT_WEIGHTS = (0.5, 0.3, 0.15, 0.05)
#: Segment records per call on average (results + turns + failures).
RECORDS_PER_CALL = 50
#: Calls generated and written per chunk.
CHUNK_CALLS = 2000
MODELS = ("ser-cnn-lstm@3.1.0", "ser-cnn-lstm@3.0.0")


def _trend(diff: float) -> str:
    low, high = TREND_STEPS
    if abs(diff) < low:
        return "NoChange"
    if diff > 0:
        return "SlightlyImproving" if diff < high else "Improving"
    return "SlightlyDeclining" if diff > -high else "Declining"


def _probs(rng: np.random.Generator, n: int, bias: np.ndarray) -> np.ndarray:
    """``n`` probability vectors over LABELS, leaning towards ``bias`` (per-row weights)."""
    return rng.dirichlet(np.ones(len(LABELS)) * 0.6, size=n) * 0.6 + bias * 0.4


class Generator:
    """Rows of ``n_calls`` calls, chunk by chunk (seeded: the same arguments give the same rows)."""

    def __init__(self, n_calls: int, *, seed: int = 0, days: float = 90.0, now: float | None = None) -> None:
        self.n_calls, self.seed, self.days = n_calls, seed, days
        self.now = float(int(time.time() if now is None else now))
        n_agents = max(5, n_calls // 200)
        self.agents = [f"agent-{k:04d}" for k in range(n_agents)]
        weights = np.random.default_rng(seed).pareto(3.0, n_agents) + 1.0
        self.agent_weights = weights / weights.sum()
        self.queue_weights = np.linspace(2.0, 0.4, len(QUEUES)) / np.linspace(2.0, 0.4, len(QUEUES)).sum()

    def chunks(self) -> Iterator[dict[Table, list[tuple[Any, ...]]]]:
        for first in range(0, self.n_calls, CHUNK_CALLS):
            yield self.chunk(first, min(CHUNK_CALLS, self.n_calls - first))

    def chunk(self, first: int, n: int) -> dict[Table, list[tuple[Any, ...]]]:
        rng = np.random.default_rng([self.seed, first])
        day = rng.integers(0, int(self.days), n)
        today = np.floor(self.now / 86400)
        weekend = (today - day - 1 + 3) % 7 >= 5  # unix day 0 was a Thursday: (d + 3) % 7 is 0 on Mondays
        day = np.where(weekend & (rng.random(n) < 0.7), day + 2, day)  # fewer calls at weekends
        hour = np.clip(rng.normal(13.0, 3.2, n), 0.0, 23.99)
        started = (today - day - 1) * 86400 + hour * 3600
        duration = np.clip(rng.lognormal(np.log(300.0), 0.7, n), 15.0, 5400.0)
        cust = np.clip(rng.normal(0.3, 1.8, n), -SCALE, SCALE)
        agent_sc = np.clip(rng.normal(1.6, 0.9, n), -SCALE, SCALE)
        trend_diff = rng.normal(0.0, 1.5, n)
        cneg = np.clip(0.25 - cust * 0.05 + rng.normal(0, 0.06, n), 0.0, 1.0)
        aneg = np.clip(0.15 - agent_sc * 0.03 + rng.normal(0, 0.04, n), 0.0, 1.0)
        interruptions = rng.poisson(0.5 + duration / 150.0)
        non_talk = rng.beta(2.0, 7.0, n)
        overtalks = rng.poisson(interruptions * 1.2)
        silences = rng.poisson(duration / 90.0)
        agent_idx = rng.choice(len(self.agents), n, p=self.agent_weights)
        queue_idx = rng.choice(len(QUEUES), n, p=self.queue_weights)
        tenant_idx = rng.choice(len(TENANTS), n, p=TENANT_WEIGHTS)
        direction = rng.choice(["inbound", "outbound", "internal"], n, p=[0.8, 0.18, 0.02])
        results = rng.poisson(RECORDS_PER_CALL * 8 / 9, n) + 1
        out: dict[Table, list[tuple[Any, ...]]] = {t: [] for t in (calls, speakers, label_shares, segments, events,
                                                                    alerts)}
        for i in range(n):
            cid = f"bench-{first + i:07d}"
            dur, ts = float(duration[i]), float(started[i])
            model = MODELS[0] if day[i] < self.days * 0.8 else MODELS[1]
            fired = []
            if cneg[i] > 0.45:
                fired.append(("customer_negative", "customer", 0.6))
            if interruptions[i] >= 8:
                fired.append(("interruptions", "agent", float(interruptions[i])))
            if rng.random() < 0.03:
                fired.append(("dead_air", "agent", 0.0))
            out[calls].append(self._call_row(cid, ts, dur, model, agent_idx[i], queue_idx[i], tenant_idx[i],
                                             str(direction[i]), float(cust[i]), _trend(float(trend_diff[i])),
                                             float(cneg[i]), float(agent_sc[i]), float(aneg[i]), int(interruptions[i]),
                                             float(non_talk[i]), int(overtalks[i]), int(silences[i]), len(fired),
                                             int(results[i])))
            self._children(out, rng, cid, ts, dur, model, float(cust[i]), float(agent_sc[i]), float(cneg[i]),
                           float(aneg[i]), int(results[i]), int(min(overtalks[i] + silences[i], 8)), fired)
        return out

    def _call_row(self, cid: str, ts: float, dur: float, model: str, agent: int, queue: int, tenant: int,
                  direction: str, cust: float, trend: str, cneg: float, agent_sc: float, aneg: float, intr: int,
                  non_talk: float, overtalks: int, silences: int, n_alerts: int, n_results: int) -> tuple[Any, ...]:
        dynamics = json.dumps({"interruptions": intr, "overtalk_count": overtalks, "silence_count": silences,
                               "non_talk_s": round(dur * non_talk, 2)})
        params = json.dumps({"agent": self.agents[agent], "queue": QUEUES[queue], "tenant": TENANTS[tenant],
                             "direction": direction})
        return (cid, "CA" + cid[6:], "twilio", "ended", "completed", ts, ts + dur, dur, '["agent","customer"]',
                '{"agent":"agent","customer":"customer"}', self.agents[agent], QUEUES[queue], direction,
                TENANTS[tenant], params, model, model.split("@")[1], json.dumps(list(LABELS)), n_results, 0, dynamics,
                dur * (1 - non_talk), non_talk, intr, overtalks, silences, cust, trend, cneg, agent_sc, "NoChange",
                aneg, n_alerts, ts + dur + 1, ts + dur + 1)

    def _children(self, out: dict[Table, list[tuple[Any, ...]]], rng: np.random.Generator, cid: str, ts: float,
                  dur: float, model: str, cust: float, agent_sc: float, cneg: float, aneg: float, n_results: int,
                  n_events: int, fired: Sequence[tuple[str, str, float]]) -> None:
        neg_idx = np.array([label in NEGATIVE for label in LABELS], dtype=float)
        for ch, score, neg in (("agent", agent_sc, aneg), ("customer", cust, cneg)):
            out[speakers].append((cid, ch, ch, n_results // 2, dur * 0.4, score,
                                  json.dumps([round(score + d, 2) for d in rng.normal(0, 0.5, 4)]), "NoChange", neg,
                                  dur * 0.4, 0.4, 0))
            shares = rng.dirichlet(np.ones(len(LABELS)))
            shares = shares * (1 - neg) * (1 - neg_idx) / max(float((shares * (1 - neg_idx)).sum()), 1e-9) + \
                shares * neg * neg_idx / max(float((shares * neg_idx).sum()), 1e-9)
            out[label_shares].extend((cid, ch, label, ch, round(float(v), 4)) for label, v in zip(LABELS, shares,
                                                                                               strict=True))
        bias = np.zeros((n_results, len(LABELS)))
        bias[np.arange(n_results), rng.integers(0, len(LABELS), n_results)] = 1.0
        probs = _probs(rng, n_results, bias)
        conf = probs.max(axis=1)
        top = probs.argmax(axis=1)
        starts = np.sort(rng.uniform(0, max(dur - 3.0, 0.1), n_results))
        seq = {"agent": 0, "customer": 0}
        turn_seq = {"agent": 0, "customer": 0}
        for j in range(n_results):
            ch = "agent" if j % 2 == 0 else "customer"
            start = round(float(starts[j]), 3)
            p = "{" + ",".join(f'"{label}":{probs[j, k]:.4f}' for k, label in enumerate(LABELS)) + "}"
            if rng.random() < 0.01:
                out[segments].append((cid, ch, seq[ch], "failure", start, start + 3.0, None, None, None, None, None,
                                      None, "model error: bench", model))
            else:
                out[segments].append((cid, ch, seq[ch], "result", start, start + 3.0, LABELS[top[j]],
                                      round(float(conf[j]), 4), bool(conf[j] < 0.4), p, seq[ch], None, None, model))
            seq[ch] += 1
            if j % 8 == 7:
                out[segments].append((cid, ch, turn_seq[ch], "turn", max(start - 9.0, 0.0), start + 3.0, LABELS[top[j]],
                                      round(float(conf[j]), 4), False, p, None, 4, None, model))
                turn_seq[ch] += 1
        for k in range(n_events):
            kind = "silence" if k % 2 else "overtalk"
            at = round(float(rng.uniform(0, dur)), 3)
            ev = json.dumps({"kind": kind, "call_id": cid, "start_s": at, "end_s": round(at + 1.5, 3)})
            out[events].append((cid, f"{cid[-8:]}{k:024d}", kind, ts + at, at, ev))
        for k, (rule, ch, score) in enumerate(fired):
            since = round(dur * (0.3 + 0.1 * k), 3)
            out[alerts].append((cid, rule, ch, since, since + 20.0, ts + since, ts + since + 20.0, score, "score"))


COLUMNS: dict[Table, tuple[str, ...]] = {
    calls: ("call_id", "raw_id", "source", "status", "end_reason", "started_ts", "ended_ts", "duration_s", "channels",
            "roles", "agent", "queue", "direction", "tenant", "params", "model", "model_version", "labels",
            "segments", "failed", "dynamics", "talk_s", "non_talk_share", "interruptions", "overtalk_count",
            "silence_count", "customer_score", "customer_trend", "customer_negative_share", "agent_score",
            "agent_trend", "agent_negative_share", "alerts_fired", "archived_ts", "updated_ts"),
    speakers: ("call_id", "channel", "role", "segments", "speech_s", "score", "quarters", "trend", "negative_share",
               "talk_s", "talk_share", "interruptions"),
    label_shares: ("call_id", "channel", "label", "role", "share"),
    segments: ("call_id", "channel", "seq", "kind", "start_s", "end_s", "label", "confidence", "uncertain", "probs",
               "history", "segments", "error", "model"),
    events: ("call_id", "event_key", "kind", "ts", "at_s", "event"),
    alerts: ("call_id", "rule", "channel", "since_s", "until_s", "opened_ts", "closed_ts", "score", "close_reason"),
}


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return repr(value)
    return str(value)  # generated text holds no tab, newline or backslash


def bulk_insert(engine: Engine, gen: Generator, *, progress: Callable[[int, int], None] | None = None) -> None:
    """Write every chunk of ``gen``: COPY on PostgreSQL, executemany on SQLite, one transaction per chunk."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        done = 0
        for chunk in gen.chunks():
            for table, rows in chunk.items():
                names = COLUMNS[table]
                if not rows:
                    continue
                if engine.dialect.name == "postgresql":
                    with cur.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                        copy.write("".join("\t".join(map(_copy_text, r)) + "\n" for r in rows))
                else:
                    marks = ", ".join("?" * len(names))
                    cur.executemany(f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})", rows)
            raw.commit()
            done += len(chunk[calls])
            if progress is not None:
                progress(done, gen.n_calls)
        cur.close()
    finally:
        raw.close()
