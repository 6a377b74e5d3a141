"""Write one call's events and its registry entries to Redis (schema: :mod:`callevents.schema`).

:class:`CallEvents` is what the ingestion side holds per call: :meth:`~CallEvents.start` when the
call's channels are known, :meth:`~CallEvents.add` with the result records as they are released
(in time order), :meth:`~CallEvents.end` once. Each call is one pipelined round trip.

:class:`AsyncCallEvents` is the same for an asyncio caller (``redis.asyncio``).

Events are best effort: the results stream is the record of a call. A Redis error while writing
events is logged (once per call) and counted in :attr:`CallEvents.dropped`, and never stops the
call; for :data:`BACKOFF_S` after one, events are dropped without trying (``end`` always tries). While
the call's :class:`RedisLink` says Redis is down (the producer's backend lost it and has not heard from
it since), every write is dropped without trying, ``end`` included: a hung Redis costs a socket timeout
per try, and the backend's ``--timeout`` is what bounds the wait.
Without a connection (embedded mode) nothing is computed or written, unless a ``collect`` list is
given: then every event is computed as in a distributed run and appended to it (``ser-produce
--archive`` hands them to the archive); with a connection too, each event is both written and collected.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from callevents.rules import Engine, EventSettings
from callevents.schema import (
    ALERT_CLOSED,
    ALERT_OPENED,
    CALL_ENDED,
    CALL_EVENTS_MAXLEN,
    CALL_STARTED,
    CALL_TTL_S,
    CALLS_KEY,
    DYNAMICS,
    END_REASONS,
    ENDED_KEEP,
    ENDED_KEEP_S,
    ENDED_KEY,
    EVENTS_KEY,
    EVENTS_MAXLEN,
    HEARTBEAT_S,
    TREND,
    call_key,
    encode_event,
    events_key,
)
from models.ids import key_id

log = logging.getLogger(__name__)
#: After a failed write, events are dropped without trying Redis for this many seconds (a client's
#: retries can take seconds; the call must not wait on them). ``end`` always tries.
BACKOFF_S = 5.0


class RedisLink:
    """What a call's Redis clients know of their server, shared by the producer's backend and its
    best-effort writers (call events, metrics): ``down_since`` is the ``time.monotonic()`` of the first
    connection error or timeout not yet followed by an answer (None: up)."""

    def __init__(self) -> None:
        self.down_since: float | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def lost(self) -> float:
        """Note a connection error or timeout (the first since the last answer counts); returns ``down_since``."""
        if self.down_since is None:
            self.down_since = time.monotonic()
        return self.down_since

    def answered(self) -> None:
        self.down_since = None

    def failed(self, exc: BaseException) -> None:
        """Note ``exc`` when it is a lost connection (a timeout or connection error), not a refused command."""
        import redis

        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)):
            self.lost()


def _json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _nothing(pipe: Any) -> None:
    """No extra command: a write of the registry entries and ``alive`` alone (a heartbeat)."""


class CallEvents:
    def __init__(self, connection: Any, *, call_id: str, source: str, channels: Sequence[str], model: str = "",
                 labels: Sequence[str] = (), params: Mapping[str, str] | None = None,
                 settings: EventSettings | None = None, clock: Callable[[], float] = time.time,
                 collect: list[dict[str, Any]] | None = None, link: RedisLink | None = None) -> None:
        self.connection = connection
        #: Shared with the producer's backend: while it says Redis is down, nothing is tried.
        self.link = link
        #: Every event computed, in order (None: not kept); lets a caller without Redis have them.
        self.collected = collect
        self.raw_id = str(call_id)
        self.call_id = key_id(self.raw_id)  # in every key, the registry and the events (models.ids)
        self.source = source
        self.channels = list(channels)
        self.model = model
        self.labels = list(labels)
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        self.engine = Engine(settings, channels=self.channels, labels=self.labels)
        self.clock = clock
        self.started: float | None = None
        self.ended = False
        self.dropped = 0  # events lost to Redis errors
        self.written = 0  # events written (or attempted)
        self.info: dict[str, Any] = {}  # the call_started event
        self._retry_at = 0.0  # time.monotonic() before which writes are skipped (after a failure)
        self._beat_at = 0.0  # time.monotonic() of the latest write of ``alive``
        #: Extra fields of the ``call_ended`` event (e.g. the gateway's ``dropped_audio_s``).
        self.end_fields: dict[str, Any] = {}
        #: Open alerts of other rules (the dynamics' :class:`callevents.dynrules.DynamicsAlerts`), in ``alerts``.
        self.other_alerts: dict[tuple[str, str], dict[str, Any]] = {}

    @property
    def enabled(self) -> bool:
        return self.connection is not None or self.collected is not None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"kind": kind, "call_id": self.call_id, "ts": round(self.clock(), 3), **fields}

    def _queue(self, pipe: Any, events: list[dict[str, Any]], extra: Callable[[Any], None] | None) -> None:
        """Queue the commands that write ``events`` (and ``extra``'s) on a pipeline, sync or asyncio."""
        hkey, ekey = call_key(self.call_id), events_key(self.call_id)
        if extra is not None:
            extra(pipe)
        if self.started is not None and not self.ended:  # (re-)register: also after a Redis restart
            pipe.zadd(CALLS_KEY, {self.call_id: self.started}, nx=True)
            pipe.hsetnx(hkey, "info", _json(self.info))
            pipe.hset(hkey, "alive", repr(round(self.clock(), 3)))
            self._beat_at = time.monotonic()
        for ev in events:
            fields = encode_event(ev)
            pipe.xadd(ekey, fields, maxlen=CALL_EVENTS_MAXLEN, approximate=True)
            pipe.xadd(EVENTS_KEY, fields, maxlen=EVENTS_MAXLEN, approximate=True)
            if ev["kind"] == TREND:
                pipe.hset(hkey, f"trend:{ev['channel']}", _json(ev))
            elif ev["kind"] == DYNAMICS:
                pipe.hset(hkey, "dynamics", _json(ev))
        if any(ev["kind"] in (ALERT_OPENED, ALERT_CLOSED) for ev in events):
            pipe.hset(hkey, "alerts", _json([*self.engine.open.values(), *self.other_alerts.values()]))
        pipe.expire(hkey, CALL_TTL_S)
        pipe.expire(ekey, CALL_TTL_S)

    def _skip(self, events: list[dict[str, Any]], extra: Callable[[Any], None] | None, *, force: bool) -> bool:
        """True when there is nothing to write, Redis is known down, or it failed less than BACKOFF_S ago
        (counted)."""
        if not events and extra is None:
            return True
        self.written += len(events)
        if (self.link is not None and self.link.down) or (not force and time.monotonic() < self._retry_at):
            self.dropped += len(events)
            return True
        return False

    def _failed(self, events: list[dict[str, Any]], exc: Exception) -> None:
        self._retry_at = time.monotonic() + BACKOFF_S
        if self.link is not None:
            self.link.failed(exc)
        self.dropped += len(events)
        if self.dropped == len(events):  # the first loss of this call
            log.warning("call %s: events not written to Redis (%s); the call goes on", self.call_id, exc)

    def _keep(self, events: list[dict[str, Any]]) -> bool:
        """Append ``events`` to :attr:`collected` (when kept); True when there is Redis to write to."""
        if self.collected is not None:
            self.collected.extend(events)
        return self.connection is not None

    def _write(self, events: list[dict[str, Any]], extra: Callable[[Any], None] | None = None, *,
               force: bool = False) -> None:
        if not self._keep(events) or self._skip(events, extra, force=force):
            return
        try:
            pipe = self.connection.pipeline(transaction=False)
            self._queue(pipe, events, extra)
            pipe.execute()
        except Exception as exc:  # redis.RedisError, OSError: events are best effort
            self._failed(events, exc)

    def _start_plan(self) -> tuple[list[dict[str, Any]], Callable[[Any], None] | None]:
        if not self.enabled or self.started is not None:
            return [], None
        self.started = self.clock()
        raw = {"raw_call_id": self.raw_id} if self.raw_id != self.call_id else {}
        self.info = self._event(CALL_STARTED, source=self.source, channels=self.channels, params=self.params,
                                model=self.model, labels=self.labels, **raw)

        def reset(pipe: Any) -> None:
            pipe.delete(call_key(self.call_id), events_key(self.call_id))
            pipe.zrem(ENDED_KEY, self.call_id)

        return [self.info], reset

    def _add_plan(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if not self.enabled:
            return []
        return [self._event(ev.pop("kind"), **ev) for rec in records for ev in self.engine.feed(rec)]

    def _end_plan(self, *, reason: str, duration_s: float,
                  summary: Mapping[str, Any]) -> tuple[list[dict[str, Any]], Callable[[Any], None] | None]:
        if not self.enabled or self.ended or self.started is None:
            return [], None
        if reason not in END_REASONS:
            raise ValueError(f"unknown end reason {reason!r} (one of {', '.join(END_REASONS)})")
        closed = [self._event(ev.pop("kind"), **ev) for ev in self.engine.finish(at_s=duration_s)]
        segments = sum(int(ch.get("segments", 0)) for ch in summary.values())
        failed = sum(int(ch.get("failed", 0)) for ch in summary.values())
        ended = self._event(CALL_ENDED, reason=reason, duration_s=round(duration_s, 3), segments=segments,
                            failed=failed, summary=dict(summary), **self.end_fields)
        now = ended["ts"]
        self.ended = True

        def finish(pipe: Any) -> None:
            hkey = call_key(self.call_id)
            pipe.hset(hkey, "ended", _json(ended))
            pipe.zrem(CALLS_KEY, self.call_id)
            pipe.zadd(ENDED_KEY, {self.call_id: now})
            pipe.zremrangebyscore(ENDED_KEY, "-inf", now - ENDED_KEEP_S)
            pipe.zremrangebyrank(ENDED_KEY, 0, -ENDED_KEEP - 1)

        return [*closed, ended], finish

    def start(self) -> None:
        """Register the call as active (a re-used call id starts afresh) and publish ``call_started``."""
        self._write(*self._start_plan())

    def add(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Feed released result records to the rules; write and return the events they cause."""
        events = self._add_plan(records)
        self._write(events)
        return events

    def publish(self, events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Write events computed elsewhere (the conversation dynamics: ``dynamics``, ``silence``,
        ``overtalk`` and their alerts; without ``call_id``/``ts``, which are added)."""
        if not self.enabled or self.started is None or self.ended:
            return []
        out = [self._event(str(ev["kind"]), **{k: v for k, v in ev.items() if k != "kind"}) for ev in events]
        self._write(out)
        return out

    def _beat_due(self) -> bool:
        return (self.connection is not None and self.started is not None and not self.ended
                and time.monotonic() - self._beat_at >= HEARTBEAT_S)

    def beat(self) -> None:
        """Refresh the call's ``alive`` time when :data:`HEARTBEAT_S` have passed since the last write
        (cheap to call per audio block): a reader can tell a quiet call from a lost one."""
        if self._beat_due():
            self._write([], _nothing)

    def end(self, *, reason: str, duration_s: float, summary: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Close open alerts, publish ``call_ended`` and move the call to the recently-ended list
        (once; later calls return [])."""
        events, extra = self._end_plan(reason=reason, duration_s=duration_s, summary=summary)
        self._write(events, extra, force=True)
        return events


class AsyncCallEvents(CallEvents):
    """:class:`CallEvents` for an asyncio ingestion side (e.g. a gateway serving many calls in one
    event loop): the same events and keys, written through a ``redis.asyncio`` connection."""

    async def _awrite(self, events: list[dict[str, Any]], extra: Callable[[Any], None] | None = None, *,
                      force: bool = False) -> None:
        if not self._keep(events) or self._skip(events, extra, force=force):
            return
        try:
            pipe = self.connection.pipeline(transaction=False)
            self._queue(pipe, events, extra)
            await pipe.execute()
        except Exception as exc:  # redis.RedisError, OSError: events are best effort
            self._failed(events, exc)

    async def start(self) -> None:  # type: ignore[override]
        await self._awrite(*self._start_plan())

    async def add(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:  # type: ignore[override]
        events = self._add_plan(records)
        await self._awrite(events)
        return events

    async def beat(self) -> None:  # type: ignore[override]
        if self._beat_due():
            await self._awrite([], _nothing)

    async def end(self, *, reason: str, duration_s: float,  # type: ignore[override]
                  summary: Mapping[str, Any]) -> list[dict[str, Any]]:
        events, extra = self._end_plan(reason=reason, duration_s=duration_s, summary=summary)
        await self._awrite(events, extra, force=True)
        return events
