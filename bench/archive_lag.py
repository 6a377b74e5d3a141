"""Archive lag under a live load: ``ser-archive`` (its own process, as deployed) follows Redis while
``--calls`` concurrent calls publish results and events at a live call's pace, written the way the
producer and the workers write them (:class:`LiveCall`: ``callevents.writer.CallEvents`` for the events,
``workers.contract.encode_entry`` for the results stream; no audio, no model). Prints the archiver's own
``ser_archive_lag_seconds`` (sampled every second from its ``/metrics``: p50, p95, max), the record rate,
and how long the archive took to drain after the load stopped.

    python -m bench.archive_lag --calls 200 --seconds 60 --database postgresql+psycopg://ser@127.0.0.1:5432/bench

Without ``--database`` a SQLite file in a temporary directory. Redis: a private ``redis-server``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bench.server import free_port, redis_server
from callevents.writer import CallEvents
from producer.turns import TurnBuilder
from workers.contract import RESULTS_TTL_S, encode_entry, results_key

ROOT = Path(__file__).resolve().parents[1]
#: Seconds between two records of one call (two channels, an utterance every ~3 s each).
RECORD_EVERY_S = 1.5
LABELS = ("neutral", "happy", "sad", "angry")
MODEL = "ser-test@1.0.0"
#: A base64 float16 embedding as the history models publish it: it must never reach the archive.
EMBEDDING = "QUJDREVGR0hJSktMTU5PUA=="


def _records(call_id: str, n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    seqs = {"agent": 0, "customer": 0}
    out = []
    for i in range(n):
        ch = ("agent", "customer")[(i // 3) % 2]
        p = rng.dirichlet(np.ones(len(LABELS)) * (0.3 if ch == "customer" else 1.0))
        best = int(np.argmax(p))
        rec: dict[str, Any] = {
            "stream_id": call_id, "channel": ch, "seq": seqs[ch], "start_s": round(2.0 * i, 3),
            "end_s": round(2.0 * i + 1.8, 3), "kind": "result", "label": LABELS[best],
            "confidence": round(float(p[best]), 6), "uncertain": bool(p[best] < 0.5),
            "probs": {lab: round(float(v), 6) for lab, v in zip(LABELS, p, strict=True)}, "model": MODEL,
            "history": seqs[ch], "embedding": EMBEDDING}
        if i % 7 == 5:  # a failed segment now and then
            rec = {k: rec[k] for k in ("stream_id", "channel", "seq", "start_s", "end_s")}
            rec.update(kind="failure", error="worker crashed", model=MODEL)
        seqs[ch] += 1
        out.append(rec)
    return out


class LiveCall:
    """One call in progress, written as the producer and the workers write it."""

    def __init__(self, r: redis.Redis, call_id: str, *, segments: int = 12, seed: int = 0) -> None:
        self.r, self.call_id, self.key = r, call_id, results_key(call_id)
        self.records = _records(call_id, segments, seed)
        self.sent = 0
        self.turns = TurnBuilder()
        params = {"agent": "a-7", "queue": "billing", "direction": "inbound"}
        self.events = CallEvents(r, call_id=call_id, source="file", channels=["agent", "customer"], model=MODEL,
                                 labels=list(LABELS), params=params)
        self.events.start()

    def _xadd(self, records: Iterable[dict[str, Any]]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for rec in records:
            pipe.xadd(self.key, encode_entry(rec))
        pipe.expire(self.key, RESULTS_TTL_S)
        pipe.execute()

    def step(self, k: int = 3) -> bool:
        """Publish the next ``k`` records (results, the turns they close, their events); False when done."""
        batch = self.records[self.sent:self.sent + k]
        self.sent += len(batch)
        turns = [t for rec in batch if rec["kind"] == "result" for t in self.turns.feed(rec)]
        self._xadd([*batch, *turns])
        self.events.add([{k: v for k, v in rec.items() if k != "embedding"} for rec in batch])
        self.events.beat()
        return self.sent < len(self.records)

    def end(self) -> None:
        duration = self.records[-1]["end_s"] + 1.0
        results = [r for r in self.records if r["kind"] == "result"]
        self._xadd([*self.turns.finish(), {"kind": "end", "stream_id": self.call_id, "segments": len(self.records),
                                           "duration_s": duration, "model": MODEL}])
        summary = {ch: {"segments": sum(r["channel"] == ch for r in results),
                        "failed": sum(r["channel"] == ch and r["kind"] == "failure" for r in self.records)}
                   for ch in ("agent", "customer")}
        self.events.end(reason="completed", duration_s=duration, summary=summary)

    def run(self) -> LiveCall:
        while self.step():
            pass
        self.end()
        return self


def write_calls(r: redis.Redis, prefix: str, n: int, *, segments: int = 12, seed: int = 0) -> list[str]:
    for i in range(n):
        LiveCall(r, f"{prefix}-{i}", segments=segments, seed=seed + i).run()
    return [f"{prefix}-{i}" for i in range(n)]


def _lag(url: str) -> float | None:
    try:
        body = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return None
    m = re.search(r"^ser_archive_lag_seconds ([0-9.e+-]+)$", body, re.M)
    return float(m.group(1)) if m else None


def _archiver(redis_url: str, db_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["SER_ARCHIVE_URL"] = db_url  # not argv: a bench URL may carry a password
    cmd = [sys.executable, "-m", "archive.cli", "--redis-url", redis_url, "--retention-days", "0",
           "--metrics-port", str(port), "--log-level", "WARNING"]
    return subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=str(ROOT))


def run(*, calls: int, seconds: float, db_url: str, workdir: Path) -> dict[str, Any]:
    with redis_server() as (redis_url, _version):
        r = redis.Redis.from_url(redis_url)
        port = free_port()
        proc = _archiver(redis_url, db_url, port, workdir / "archiver.log")
        metrics = f"http://127.0.0.1:{port}/metrics"
        try:
            deadline = time.monotonic() + 60
            while _lag(metrics) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the archiver did not start: " + (workdir / "archiver.log").read_text()[-2000:])
                time.sleep(0.2)
            per_call = max(2, int(seconds / RECORD_EVERY_S))
            live = [LiveCall(r, f"bench-{i}", segments=per_call, seed=i) for i in range(calls)]
            due = {c.call_id: time.monotonic() + RECORD_EVERY_S * i / calls for i, c in enumerate(live)}
            lags: list[float] = []
            records, started, next_sample = 0, time.monotonic(), time.monotonic() + 1
            while live:
                now = time.monotonic()
                for call in [c for c in live if due[c.call_id] <= now]:
                    records += 1
                    due[call.call_id] += RECORD_EVERY_S
                    if not call.step(1):
                        call.end()
                        live.remove(call)
                if now >= next_sample:
                    next_sample += 1
                    lag = _lag(metrics)
                    if lag is not None:
                        lags.append(lag)
                time.sleep(0.01)
            load_s = time.monotonic() - started
            stop = time.monotonic()
            while (lag := _lag(metrics)) is None or lag > 0 or _owed(r) > 0:
                if time.monotonic() - stop > 300:
                    break
                time.sleep(0.2)
            drain_s = time.monotonic() - stop
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            r.close()
    arr = np.asarray(lags or [0.0])
    return {"calls": calls, "load_s": load_s, "records_per_s": records / load_s,
            "lag_p50": float(np.percentile(arr, 50)), "lag_p95": float(np.percentile(arr, 95)),
            "lag_max": float(arr.max()), "drain_s": drain_s,
            "samples": len(lags)}


def _owed(r: redis.Redis) -> int:
    from archive import follow
    from callevents.schema import EVENTS_KEY

    states = follow.inspect(r, [EVENTS_KEY, *follow.scan_results(r)])
    return sum(st.owed for st in states.values())


def main(argv: Iterable[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.archive_lag", description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=200, help="concurrent live calls")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long each call runs")
    ap.add_argument("--database", default=None, help="archive URL (default: SQLite in a temporary directory)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    with tempfile.TemporaryDirectory(prefix="ser-archive-lag-") as tmp:
        db_url = args.database or f"sqlite:///{tmp}/bench.db"
        out = run(calls=args.calls, seconds=args.seconds, db_url=db_url, workdir=Path(tmp))
    print(f"{out['calls']} live calls, {out['records_per_s']:.0f} records/s for {out['load_s']:.0f} s "
          f"(+ their events), database {db_url.split(':', 1)[0]}")
    print(f"ser_archive_lag_seconds: p50 {out['lag_p50']:.2f} s, p95 {out['lag_p95']:.2f} s, "
          f"max {out['lag_max']:.2f} s over {out['samples']} samples; drained {out['drain_s']:.1f} s after the load")


if __name__ == "__main__":
    main()
