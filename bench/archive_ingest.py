"""``python -m bench.archive --ingest``: records/s through :func:`archive.ingest.write`, the archiver's write
path, on PostgreSQL and SQLite.

A simulated live floor: ``--concurrent`` calls at a time, each a stereo call whose two channels produce a
result record every :data:`HOP_S` s of audio (a turn every 8 results), a ``dynamics`` event every 5 s,
``call_started`` first and ``call_ended`` plus the ``end`` record last; a finished call is replaced by a
new one. The entries come interleaved across calls in time order, as the archiver reads them from Redis,
encoded as Redis holds them (``encode_event``/``encode_entry``), and handled in batches of ``--batch`` entries
(default 1,000: what one ``XREADGROUP`` over the events stream and the live calls' results streams
delivers at that rate), one transaction each (:func:`archive.db.begin_write`). Timed, as the archiver
spends it: parsing the entries (:func:`archive.follow.parse`), validation (``Batch.add_*``), write, commit.
"records" counts every record (results, turns, ``end``); the target is on result records.

Target (issue 32): 20x the record rate of 1,000 concurrent live stereo calls. A live call sends one
segment per channel every 3 s (docs/benchmark.md, "enqueue"), so 1,000 stereo calls make
1000 x 2 / 3 = 667 result records/s and the target is 13,333 records/s.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from archive import db, follow, ingest
from archive.settings import DEFAULT_MAX_ENTRY_BYTES
from callevents.schema import EVENTS_KEY, encode_event
from workers.contract import encode_entry, results_key

HOP_S = 3.0
LIVE_CALLS = 1000
TARGET_FACTOR = 20
#: Result records per second of 1,000 live stereo calls, and the target.
LIVE_RATE = LIVE_CALLS * 2 / HOP_S
TARGET_RECORDS_S = TARGET_FACTOR * LIVE_RATE
LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
MODEL = "ser-cnn-lstm@3.1.0"
T0 = 1_796_000_000.0
T0_MS = 1_796_000_000_000


def _probs(rng: random.Random) -> dict[str, float]:
    w = [rng.random() ** 3 for _ in LABELS]
    total = sum(w)
    return {label: round(x / total, 4) for label, x in zip(LABELS, w, strict=True)}


def _call(n: int, rng: random.Random, results_per_channel: int) -> Iterator[tuple[float, str, dict[str, Any]]]:
    """One call's entries as (audio time, kind of entry: event|record, payload)."""
    cid = f"ingest-{n:07d}"
    ts0 = T0 + n * 7.0
    channels = ("agent", "customer")
    yield 0.0, "event", {"kind": "call_started", "call_id": cid, "ts": ts0, "source": "twilio",
                         "channels": list(channels), "model": MODEL, "labels": list(LABELS),
                         "params": {"agent": f"agent-{n % 300:03d}", "queue": f"q{n % 12}", "tenant": "acme"}}
    duration = results_per_channel * HOP_S
    for i in range(results_per_channel):
        for c, ch in enumerate(channels):
            start = i * HOP_S + c * 0.1
            p = _probs(rng)
            label = max(p, key=lambda k: p[k])
            yield start + HOP_S, "record", {"stream_id": cid, "kind": "result", "channel": ch, "seq": i,
                                            "start_s": round(start, 3), "end_s": round(start + HOP_S, 3),
                                            "label": label, "confidence": p[label], "uncertain": p[label] < 0.4,
                                            "probs": p, "history": min(i, 10), "model": MODEL}
            if i % 8 == 7:
                yield start + HOP_S, "record", {"stream_id": cid, "kind": "turn", "channel": ch, "seq": i // 8,
                                                "start_s": round(start - 21.0, 3), "end_s": round(start + HOP_S, 3),
                                                "segments": 8, "label": label, "confidence": p[label],
                                                "uncertain": False, "probs": p, "model": MODEL}
    talk = {ch: {"talk_s": duration * 0.4, "talk_share": 0.4, "level_db": -23.0, "raised_s": 0.0, "rate_sps": 4.0,
                 "rate_rel": None, "interruptions": 1, "yielded": 0} for ch in channels}
    totals = {"channels": talk, "non_talk_s": duration * 0.2, "silence": {"min_s": 5.0, "count": 1, "total_s": 6.0,
                                                                          "longest_s": 6.0},
              "overtalk": {"min_s": 0.5, "count": 2, "total_s": 1.5}}
    for k in range(1, int(duration // 5) + 1):
        yield k * 5.0, "event", {"kind": "dynamics", "call_id": cid, "ts": ts0 + k * 5.0, "at_s": k * 5.0,
                                 "duration_s": k * 5.0, **totals}
    yield duration + 0.5, "record", {"stream_id": cid, "kind": "end", "segments": 2 * results_per_channel,
                                     "duration_s": duration, "model": MODEL,
                                     "channels": {ch: {"segments": results_per_channel, "skipped": 0}
                                                  for ch in channels}, "dynamics": {**totals, "duration_s": duration}}
    yield duration + 0.6, "event", {"kind": "call_ended", "call_id": cid, "ts": ts0 + duration + 0.6,
                                    "reason": "completed", "duration_s": duration, "segments": 2 * results_per_channel,
                                    "failed": 0, "summary": {}, "dynamics": {**totals, "duration_s": duration,
                                                                              "silences": [], "overtalks": []}}


def floor_entries(*, records: int, concurrent: int, results_per_channel: int, seed: int,
                  ) -> list[tuple[str, dict[str, Any]]]:
    """Entries of a live floor in time order until about ``records`` result records were produced."""
    rng = random.Random(seed)
    calls_needed = max(concurrent, -(-records // (2 * results_per_channel)))
    entries: list[tuple[float, int, str, dict[str, Any]]] = []
    for n in range(calls_needed):
        offset = (n // concurrent) * results_per_channel * HOP_S + rng.uniform(0, results_per_channel * HOP_S)
        entries.extend((offset + at, n, kind, payload) for at, kind, payload in _call(n, rng, results_per_channel))
    entries.sort(key=lambda e: (e[0], e[1]))
    return [(kind, payload) for _, _, kind, payload in entries]


def as_read(entries: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str, dict[bytes, bytes]]]:
    """The entries as ``XREADGROUP`` returns them: (stream key, entry id, fields as bytes), events on the
    events stream and records on their call's results stream, encoded as the producer encodes them."""
    out = []
    for n, (kind, payload) in enumerate(entries):
        if kind == "event":
            key, fields = EVENTS_KEY, encode_event(payload)
        else:
            key, fields = results_key(payload["stream_id"]), encode_entry(payload)
        out.append((key, f"{T0_MS + n}-0", {k.encode(): str(v).encode() for k, v in fields.items()}))
    return out


def run(url: str, entries: list[tuple[str, dict[str, Any]]], *, batch_size: int) -> dict[str, Any]:
    """Timed per batch, as ``ser-archive`` handles one (archive.archiver): parse the entries
    (:func:`archive.follow.parse`), validate (``Batch.add_*``), write, commit; no Redis round trips."""
    engine = db.open_engine(url)
    n_results = sum(1 for kind, p in entries if kind == "record" and p["kind"] == "result")
    n_records = sum(1 for kind, _ in entries if kind == "record")
    read = as_read(entries)
    try:
        t0 = time.perf_counter()
        per_batch = []
        for i in range(0, len(read), batch_size):
            b0 = time.perf_counter()
            batch = ingest.Batch()
            for key, entry_id, fields in read[i:i + batch_size]:
                item = follow.parse(key, entry_id, fields, max_bytes=DEFAULT_MAX_ENTRY_BYTES)
                if item.event is not None:
                    batch.add_event(item.event)
                elif item.record is not None and item.call_id is not None:
                    batch.add_record(item.call_id, item.record)
                else:
                    raise RuntimeError(f"bench entry refused: {item.reason}")
            with db.begin_write(engine) as conn:
                ingest.write(conn, batch)
            per_batch.append(time.perf_counter() - b0)
        seconds = time.perf_counter() - t0
    finally:
        engine.dispose()
    per_batch.sort()
    return {"backend": engine.dialect.name, "entries": len(entries), "records": n_records, "results": n_results,
            "seconds": seconds, "records_s": n_records / seconds, "results_s": n_results / seconds,
            "batch_p50_ms": per_batch[len(per_batch) // 2] * 1000,
            "batch_p95_ms": per_batch[min(len(per_batch) - 1, int(0.95 * (len(per_batch) - 1) + 0.5))] * 1000}


def main(args: argparse.Namespace) -> int:
    records, concurrent = (2400, 10) if args.tiny else (args.ingest_records, args.concurrent)
    entries = floor_entries(records=records, concurrent=concurrent, results_per_channel=60, seed=args.seed)
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    results = []
    with tempfile.TemporaryDirectory(prefix="ser-bench-ingest-") as tmp:
        for backend in ([backends[0]] if args.database else backends):
            print(f"{backend}: ingesting {len(entries)} entries in batches of {args.batch}", file=sys.stderr)
            if args.database:
                results.append(run(args.database, entries, batch_size=args.batch))
            elif backend == "sqlite":
                results.append(run(f"sqlite:///{Path(tmp) / 'ingest.db'}", entries, batch_size=args.batch))
            else:
                from bench.pg import pg_server

                with pg_server(durable=True) as url:
                    results.append(run(url, entries, batch_size=args.batch))
    print(f"target: {TARGET_FACTOR} x the record rate of {LIVE_CALLS} live stereo calls (one result per channel "
          f"every {HOP_S:g} s: {LIVE_RATE:,.0f} records/s) = {TARGET_RECORDS_S:,.0f} records/s")
    print("| backend | entries | records (results) | time | records/s | results/s | batch p50 / p95 | target |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['entries']:,} | {r['records']:,} ({r['results']:,}) | {r['seconds']:.1f} s | "
              f"{r['records_s']:,.0f} | {r['results_s']:,.0f} | {r['batch_p50_ms']:.0f} / {r['batch_p95_ms']:.0f} ms "
              f"| {'met' if r['results_s'] >= TARGET_RECORDS_S else 'NOT met'} |")
    if args.json:
        import json

        args.json.write_text(json.dumps(results, indent=1))
    return 0
