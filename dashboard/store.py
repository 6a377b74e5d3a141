"""What the dashboard reads from Redis (read-only): the call registry, events, results, pool health.

All reads go through one ``redis.asyncio`` client per process (handed down by the app). Stream
positions are Redis entry ids; a live page resumes from the ids it last saw.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from callevents.schema import CALLS_KEY, ENDED_KEY, EVENTS_KEY, LOST, call_key, decode_event, events_key, is_lost
from dashboard.settings import ENDED_SHOWN, HEALTH_EVERY_S
from workers.contract import decode_entry, results_key

#: A stream position before every entry.
START = "0-0"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _call_state(call_id: str, fields: dict[Any, Any], score: float, now: float) -> dict[str, Any] | None:
    """One call's hash (``ser:call:<id>``) as the overview shows it; None when it expired. A call
    that is not ended but whose heartbeat (``alive``) stopped more than
    :data:`~callevents.schema.LOST_AFTER_S` before ``now`` gets an ``ended`` of reason ``lost``
    (its producer died; a hash written before heartbeats existed is never lost)."""
    h = {_s(k): _s(v) for k, v in fields.items()}
    if "info" not in h:
        return None
    info = json.loads(h["info"])
    alive = float(h["alive"]) if "alive" in h else None
    ended = json.loads(h["ended"]) if "ended" in h else None
    if ended is None and alive is not None and is_lost(alive, now):
        started = float(info.get("ts", score))
        ended = {"kind": "call_ended", "call_id": call_id, "ts": alive, "reason": LOST,
                 "duration_s": round(max(alive - started, 0.0), 3)}
    return {
        "call_id": call_id, "raw_call_id": info.get("raw_call_id"),
        "source": info.get("source", ""), "channels": info.get("channels", []),
        "params": info.get("params", {}), "model": info.get("model", ""), "started": info.get("ts", score),
        "trends": {k[len("trend:"):]: json.loads(v) for k, v in h.items() if k.startswith("trend:")},
        "alerts": json.loads(h.get("alerts", "[]")),
        "ended": ended, "alive": alive,
    }


class Store:
    def __init__(self, client: Any, *, queue: str, sync_client: Any = None) -> None:
        self.client = client  # redis.asyncio.Redis
        self.sync_client = sync_client  # redis.Redis, for workers.status.pool_status (RQ is sync)
        self.queue = queue
        self._pool: tuple[float, dict[str, Any]] | None = None
        self._pool_lock = threading.Lock()  # one pool_status at a time, however many sessions ask
        self._beats: tuple[float, dict[str, Any]] | None = None
        self._beats_lock = asyncio.Lock()

    async def last_id(self, key: str) -> str:
        last = await self.client.xrevrange(key, "+", "-", count=1)
        return _s(last[0][0]) if last else START

    async def _states(self, members: list[tuple[Any, float]]) -> list[dict[str, Any]]:
        pipe = self.client.pipeline(transaction=False)
        for member, _ in members:
            pipe.hgetall(call_key(_s(member)))
        out, now = [], time.time()
        for (member, score), fields in zip(members, await pipe.execute(), strict=True):
            state = _call_state(_s(member), fields, score, now)
            if state is not None:
                out.append(state)
        return out

    async def overview(self) -> dict[str, Any]:
        """Active and recently ended calls, and the global events stream's position *before* they
        were read (events after it may repeat what the snapshot shows; applying them is idempotent)."""
        last = await self.last_id(EVENTS_KEY)
        active = await self._states(await self.client.zrange(CALLS_KEY, 0, -1, withscores=True))
        ended = await self._states(await self.client.zrevrange(ENDED_KEY, 0, ENDED_SHOWN - 1, withscores=True))
        lost = [c for c in active if c["ended"] is not None and c["ended"]["reason"] == LOST]
        ended = sorted(lost + ended, key=lambda c: -float(c["ended"]["ts"]))[:ENDED_SHOWN]
        return {"active": [c for c in active if c["ended"] is None], "ended": ended, "last_id": last}

    async def heartbeats(self) -> dict[str, Any]:
        """``{"alive": {call id: unix s}, "lost": [call id, ...]}`` over the active-call registry: when
        each live call's producer was last heard of, and which calls are lost by this host's clock.
        Read at most once per :data:`HEALTH_EVERY_S` per process, however many sessions ask."""
        async with self._beats_lock:
            now = time.monotonic()
            if self._beats is None or now - self._beats[0] >= HEALTH_EVERY_S:
                self._beats = (now, await self._read_heartbeats())
            return self._beats[1]

    async def _read_heartbeats(self) -> dict[str, Any]:
        members = await self.client.zrange(CALLS_KEY, 0, -1)
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            pipe.hmget(call_key(_s(member)), "alive", "ended")
        alive, lost, now = {}, [], time.time()
        for member, (beat, ended) in zip(members, await pipe.execute(), strict=True):
            if beat is None or ended is not None:
                continue
            alive[_s(member)] = float(_s(beat))
            if is_lost(alive[_s(member)], now):
                lost.append(_s(member))
        return {"alive": alive, "lost": lost}

    async def call(self, call_id: str) -> dict[str, Any] | None:
        """One call: its state, every event and every record so far, and both streams' positions."""
        fields = await self.client.hgetall(call_key(call_id))
        state = _call_state(call_id, fields, 0.0, time.time())
        pipe = self.client.pipeline(transaction=False)
        pipe.xrange(events_key(call_id), "-", "+")
        pipe.xrange(results_key(call_id), "-", "+")
        raw_events, raw_results = await pipe.execute()
        if state is None and not raw_results:
            return None
        events, records = [], []
        for _, f in raw_events:
            try:
                events.append(decode_event(f))
            except ValueError:
                continue
        for _, f in raw_results:
            try:
                records.append(decode_entry(f))
            except ValueError:
                continue
        return {"state": state, "events": events, "records": records,
                "events_id": _s(raw_events[-1][0]) if raw_events else START,
                "results_id": _s(raw_results[-1][0]) if raw_results else START}

    async def read_events(self, last_id: str, *, block_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """Global events after ``last_id`` (waiting up to ``block_ms``)."""
        got = await self.client.xread({EVENTS_KEY: last_id}, block=block_ms, count=500)
        out = []
        for _, entries in got or []:
            for entry_id, fields in entries:
                try:
                    out.append((_s(entry_id), decode_event(fields)))
                except ValueError:
                    out.append((_s(entry_id), {}))  # keep the position moving past a bad entry
        return out

    async def read_call(self, call_id: str, results_id: str, events_id: str, *,
                        block_ms: int) -> list[tuple[str, str, dict[str, Any]]]:
        """``(stream, entry id, payload)`` of the call's results (``"r"``) and events (``"e"``)."""
        rkey, ekey = results_key(call_id), events_key(call_id)
        got = await self.client.xread({rkey: results_id, ekey: events_id}, block=block_ms, count=500)
        out = []
        for key, entries in got or []:
            which = "r" if _s(key) == rkey else "e"
            for entry_id, fields in entries:
                try:
                    payload = decode_entry(fields) if which == "r" else decode_event(fields)
                except ValueError:
                    payload = {}
                out.append((which, _s(entry_id), payload))
        return out

    def pool(self) -> dict[str, Any]:
        """``workers.status.pool_status`` (what ``ser-status`` shows), at most once per
        :data:`HEALTH_EVERY_S` per process; blocking (call it from a thread)."""
        from workers.status import pool_status

        with self._pool_lock:
            now = time.monotonic()
            if self._pool is not None and now - self._pool[0] < HEALTH_EVERY_S:
                return self._pool[1]
            try:
                status = pool_status(self.sync_client, self.queue)
            except Exception as exc:  # Redis away: say so on the page
                status = {"error": f"{type(exc).__name__}: {exc}"}
            self._pool = (time.monotonic(), status)
            return status
