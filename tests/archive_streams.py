"""Calls written to Redis the way the producers write them (bench.archive_lag.LiveCall: callevents.writer
.CallEvents for the events, workers.contract.encode_entry for the results stream), an archiver run as its own process
(``python -m archive.cli``), and the check that the archive equals the streams, record for record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, func, select

from archive import follow
from archive.schema import calls, dead_letters, events, segments
from bench.archive_lag import EMBEDDING, LiveCall, write_calls
from callevents.schema import CALL_ENDED, CALL_STARTED, EVENTS_KEY, TREND, decode_event, events_key
from models.ids import key_id
from workers.contract import decode_entry, results_key

ROOT = Path(__file__).resolve().parents[1]
__all__ = ["EMBEDDING", "LiveCall", "write_calls"]
# --- what Redis holds, what the archive holds ----------------------------------------------------
Key = tuple[str, str, int]


def stream_truth(r: redis.Redis, call_id: str) -> dict[str, Any]:
    """The call's records (first per kind, channel, seq, as readers keep them) and its events."""
    recs: dict[Key, dict[str, Any]] = {}
    ends = set()
    for _, fields in r.xrange(results_key(call_id)):
        try:
            rec = decode_entry(fields)
        except ValueError:  # malformed: a dead letter, not a record
            continue
        if rec["kind"] in ("result", "failure", "turn"):
            recs.setdefault((rec["kind"], rec["channel"], int(rec["seq"])), rec)
        elif rec["kind"] == "end":  # kept with the events
            ends.add(json.dumps(rec, sort_keys=True))
    evs = {json.dumps(e, sort_keys=True) for e in (decode_event(f) for _, f in r.xrange(events_key(call_id)))
           if e["kind"] not in (CALL_STARTED, CALL_ENDED, TREND)}
    return {"records": recs, "events": len(evs) + len(ends)}


def snapshot(r: redis.Redis, call_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    return {c: stream_truth(r, c) for c in call_ids}


def db_call(engine: Engine, call_id: str) -> dict[str, Any]:
    cid = key_id(call_id)
    with engine.connect() as conn:
        row = conn.execute(select(calls).where(calls.c.call_id == cid)).mappings().first()
        segs = {(s["kind"], s["channel"], int(s["seq"])): dict(s)
                for s in conn.execute(select(segments).where(segments.c.call_id == cid)).mappings()}
        n_events = conn.execute(select(func.count()).select_from(events).where(events.c.call_id == cid)).scalar_one()
    return {"call": dict(row) if row else None, "segments": segs, "events": int(n_events)}


def differences(truth: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """How the archived call differs from its streams (empty: equal, record for record)."""
    out = []
    if got["call"] is None:
        return ["no calls row"]
    if got["call"]["status"] != "ended":
        out.append(f"status {got['call']['status']}")
    want = truth["records"]
    if set(want) != set(got["segments"]):
        out.append(f"records: missing {sorted(set(want) - set(got['segments']))[:5]}, "
                   f"extra {sorted(set(got['segments']) - set(want))[:5]}")
    for key in set(want) & set(got["segments"]):
        rec, row = want[key], got["segments"][key]
        for name in ("start_s", "end_s", "label", "confidence", "uncertain", "probs", "error"):
            if rec.get(name) != row.get(name) and not (name == "uncertain" and rec.get(name) is None):
                out.append(f"{key} {name}: stream {rec.get(name)!r} archive {row.get(name)!r}")
    if got["call"]["segments"] != sum(k[0] == "result" for k in want):
        out.append(f"calls.segments {got['call']['segments']}")
    if truth["events"] != got["events"]:
        out.append(f"events: stream {truth['events']} archive {got['events']}")
    return out


def all_differences(engine: Engine, truths: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    return {c: d for c, t in truths.items() if (d := differences(t, db_call(engine, c)))}


def owed(r: redis.Redis, call_ids: Iterable[str]) -> int:
    """Entries of these calls' results streams and of ser:events not yet archived by the group."""
    states = follow.inspect(r, [EVENTS_KEY, *(results_key(c) for c in call_ids)])
    return sum(st.owed for st in states.values())


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        assert time.monotonic() < deadline, f"not reached in {timeout:g} s: {what}"
        time.sleep(0.1)


def wait_archived(r: redis.Redis, engine: Engine, truths: dict[str, dict[str, Any]], *,
                  timeout: float = 30.0) -> None:
    """Until the streams owe nothing and every call equals its streams (fails with the differences)."""
    deadline = time.monotonic() + timeout
    while True:
        diffs = all_differences(engine, truths) if owed(r, truths) == 0 else {"*": ["streams still owe entries"]}
        if not diffs:
            return
        assert time.monotonic() < deadline, f"archive differs from the streams: {dict(list(diffs.items())[:3])}"
        time.sleep(0.2)


def dead_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(dead_letters).order_by(dead_letters.c.id)).mappings()]


# --- an archiver process -------------------------------------------------------------------------
class ArchiverProcess:
    """``python -m archive.cli`` against a Redis and a database, logging to a file."""

    def __init__(self, redis_url: str, db_url: str, log: Path, *args: str, consumer: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "archive.cli", "--redis-url", redis_url, "--database", db_url,
               "--claim-idle-s", "1", "--retention-days", "0", "--block-ms", "200", *args]
        if consumer:
            cmd += ["--consumer", consumer]
        self.log = log
        self._fh = log.open("ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._fh, stderr=subprocess.STDOUT, cwd=str(ROOT))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM; the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")
