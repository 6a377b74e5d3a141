"""Per-process resources of the gateway, set up once and handed down: the model bundle, the Redis
clients, the thread pool that runs the sessions' blocking parts, the metrics, and the one reader
task that follows the results streams of every live call together.

:class:`LiveCall` is the asyncio face of one :class:`producer.session.CallSession`: the protocol
handler queues audio, and the call's pump task runs the session's blocking work in the pool, one
item at a time, so neither the event loop nor the handler's socket reading blocks; the shared
reader hands the call's results-stream entries to :meth:`CallSession.deliver` and wakes the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from gateway.metrics import GatewayMetrics
from gateway.settings import PUSH_BLOCK_S, GatewaySettings
from gateway.stream_ids import claim_stream
from models.bundle import load_bundle
from models.ids import key_id
from producer.dispatch import Backend, EmbeddedBackend, RedisBackend, StalledError
from producer.session import FOLLOW_BLOCK_S, CallSession
from workers.contract import results_key

log = logging.getLogger("ser.gateway")
T = TypeVar("T")
#: Milliseconds one XREAD of the shared reader blocks.
READER_BLOCK_MS = 200
#: Most entries per stream per XREAD.
READER_COUNT = 500
#: Seconds the shared reader waits after a Redis error before reading again.
READER_RETRY_S = 0.5
#: Audio a call may queue ahead of its session (seconds) before its handler waits (backpressure).
MAX_BACKLOG_S = 10.0
#: With the backlog full, a session busy this long with one item is stuck: audio is dropped (s).
STUCK_S = 0.5
#: Queue item: take the results that arrived.
POLL = "poll"


def failure_reason(exc: BaseException) -> str:
    """What a client is told when its session failed (no internals: no host, no trace)."""
    if isinstance(exc, (StalledError, OSError)) or type(exc).__module__.split(".")[0] == "redis":
        return "service unavailable: the results store is unreachable"
    return "internal error"


class Hub:
    def __init__(self, settings: GatewaySettings, *, connection: Any = None, aconnection: Any = None,
                 metrics: GatewayMetrics | None = None) -> None:
        self.settings = settings
        self.bundle = load_bundle(settings.model_dir)
        self.spec = self.bundle.spec
        self.connection, self.aconnection = connection, aconnection
        self.model: Any = None
        if connection is None:
            from models.runtime import EmotionModel

            self.model = EmotionModel(self.bundle, threads=1)
        self.executor = ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="ser-gateway")
        self.metrics = metrics or GatewayMetrics()
        self.live: dict[str, LiveCall] = {}
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.reader_ok = True

    @property
    def embedded(self) -> bool:
        return self.connection is None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def start(self) -> None:
        if self.aconnection is not None:
            self._reader = asyncio.create_task(self._read_results(), name="ser-gateway results reader")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    def backend(self, call_id: str) -> Backend:
        s = self.settings
        if self.connection is None:
            return EmbeddedBackend(spec=self.spec, stream_id=call_id, model=self.model)
        return RedisBackend(spec=self.spec, stream_id=call_id, connection=self.connection, queue=s.queue,
                            max_pending=s.max_pending, timeout_s=s.timeout_s, resend_after_s=s.resend_after_s)

    async def open(self, *, call_id: str, source: str, names: Sequence[str], in_rate: int,
                   params: Mapping[str, str] | None = None) -> LiveCall:
        """A live call for this session of platform call id ``call_id`` (raw): a new stream when the id
        was used before (:meth:`_claim_stream`); never refused for a reused id."""
        stream = await self.run(claim_stream, self.connection, self.live, call_id)
        key = key_id(stream)
        if key in self.live:  # another session took it while we asked Redis: the next one
            stream = await self.run(claim_stream, self.connection, self.live, call_id)
            key = key_id(stream)
        call = LiveCall(self, call_id=stream, source=source, names=names, in_rate=in_rate, params=params)
        self.live[key] = call
        self.metrics.active.labels(source).inc()
        if stream != call_id:
            self.metrics.streams.labels(source).inc()
            log.info("call %s: id used before: this session is stream %s", key_id(call_id), key)
        self._wake.set()
        return call

    def forget(self, call: LiveCall) -> None:
        if self.live.get(call.key) is call:
            del self.live[call.key]
            self.metrics.active.labels(call.source).dec()

    async def _read_results(self) -> None:
        """One XREAD over the results streams of every live call (not one poller per call)."""
        positions: dict[str, tuple[LiveCall, str]] = {}
        while True:
            calls = {results_key(c.key): c for c in self.live.values() if not c.finished}
            for key in list(positions):
                if key not in calls or positions[key][0] is not calls[key]:
                    del positions[key]
            for key, call in calls.items():
                backend = call.session.backend
                if key not in positions or getattr(backend, "reread", False):
                    backend.reread = False  # type: ignore[attr-defined]
                    positions[key] = (call, "0-0")
            if not positions:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                except TimeoutError:
                    pass
                continue
            try:
                reply = await self.aconnection.xread({k: p for k, (_, p) in positions.items()},
                                                     count=READER_COUNT, block=READER_BLOCK_MS)
                self.reader_ok = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # redis.RedisError, OSError: the sessions' own retries decide
                if self.reader_ok:
                    log.warning("results reader: Redis read failed (%s); retrying", exc)
                self.reader_ok = False
                await asyncio.sleep(READER_RETRY_S)
                continue
            for key, entries in reply or []:
                key = key.decode() if isinstance(key, bytes) else key
                if key not in positions or not entries:
                    continue
                call, _ = positions[key]
                last = entries[-1][0]
                positions[key] = (call, last.decode() if isinstance(last, bytes) else last)
                call.session.deliver(list(entries))
                call.arrived.set()


class LiveCall:
    """One live call: pushes audio in blocks of :data:`PUSH_BLOCK_S`, follows its results, ends once."""

    def __init__(self, hub: Hub, *, call_id: str, source: str, names: Sequence[str], in_rate: int,
                 params: Mapping[str, str] | None) -> None:
        self.hub, self.call_id, self.source, self.names = hub, call_id, source, list(names)
        self.key = key_id(call_id)  # in keys, logs and hub.live; call_id (raw) stays in the records
        self.rate = in_rate
        self.gap = 0  # samples dropped (backlog full) not yet queued as silence
        self.dropped = 0  # samples dropped in all (kept on the time line as silence)
        self.arrived = asyncio.Event()
        self.finished = False
        self.block = max(1, round(PUSH_BLOCK_S * in_rate))
        self._audio_seconds = hub.metrics.audio_seconds.labels(source)  # per frame: the labelled child once
        self._held: list[np.ndarray] = []
        self._held_n = 0
        self._queue: asyncio.Queue[np.ndarray | int | str | None] = asyncio.Queue(
            maxsize=max(1, round(MAX_BACKLOG_S / PUSH_BLOCK_S)))
        self._pump: asyncio.Task[None] | None = None
        self._busy_since: float | None = None  # time.monotonic() the pump took its current item
        self._took = asyncio.Event()  # the pump took an item: there is room
        self.failure: Exception | None = None
        self.records = 0
        self.session = CallSession(
            spec=hub.spec, backend=hub.backend(call_id), names=names, in_rate=in_rate, batch=1,
            connection=hub.connection, call_id=call_id, source=source, params=params,
            events=hub.settings.events, sink=self._sink, shared_reader=hub.aconnection is not None)

    def _sink(self, records: list[dict[str, Any]]) -> None:
        n = sum(r.get("kind") in ("result", "failure") for r in records)  # turn records are not counted
        self.records += n
        self.hub.metrics.records.inc(n)

    async def start(self) -> None:
        await self.hub.run(self.session.start)
        self._pump = asyncio.create_task(self._pump_blocks(), name=f"ser-gateway pump {self.key}")
        log.info("call %s: started (%s, channels %s)", self.key, self.source, ",".join(self.names))

    async def _pump_blocks(self) -> None:
        """Feed the session from the queue, one item at a time (the session is not thread-safe): audio
        blocks, an int (that many samples of silence: audio dropped while the backlog was full),
        ``POLL`` (results arrived during a pause), None (the end). The protocol handler waits on the
        queue at most :data:`STUCK_S`, so it keeps reading its socket (and answering pings) while
        the session waits on backpressure or a Redis outage; after a failure the next :meth:`push`
        raises it."""
        while True:
            item = await self._queue.get()
            self._took.set()
            if item is None:
                return
            if self.failure is not None:
                continue  # drain: the handler is told at its next push
            self._busy_since = time.monotonic()
            try:
                if isinstance(item, str):
                    await self.hub.run(self.session.poll)
                elif isinstance(item, int):
                    for a in range(0, item, self.rate):
                        silence = np.zeros((len(self.names), min(self.rate, item - a)), dtype=np.float32)
                        await self.hub.run(self.session.push, silence)
                else:
                    await self.hub.run(self.session.push, item)
            except Exception as exc:  # Redis gone for good, a refused batch: this call only
                self.failure = exc
            finally:
                self._busy_since = None

    def check(self) -> None:
        """Raise what made the session fail (Redis gone for good), if anything did."""
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def push(self, block: np.ndarray) -> None:
        """Add aligned ``(channels, n)`` audio; the session gets it in blocks of :data:`PUSH_BLOCK_S`.
        With :data:`MAX_BACKLOG_S` of audio queued, waits for room only while the session makes
        progress (:meth:`_room`, at most :data:`STUCK_S`); a stuck session's audio (Redis away, the
        queue full for long) is dropped, counted, and kept on the time line as silence. Raises what
        made the session fail (after ``--timeout`` without progress)."""
        self._raise_failure()
        self._held.append(block)
        self._held_n += block.shape[1]
        self._audio_seconds.inc(block.shape[1] / self.rate)
        if self._held_n >= self.block:
            await self._enqueue(self._take_held())

    def _take_held(self) -> np.ndarray | None:
        if not self._held_n:
            return None
        joined = np.concatenate(self._held, axis=1) if len(self._held) > 1 else self._held[0]
        self._held, self._held_n = [], 0
        return joined

    async def _room(self) -> bool:
        """With the backlog full, wait for room while the session makes progress: True when there is
        room; False when its current item has run :data:`STUCK_S` (Redis away, the queue full for
        long: stuck), at once once dropping has begun. The handler waits at most STUCK_S, so it keeps
        reading its socket and answering pings."""
        while self._queue.full():
            if self.gap:
                return False
            busy = time.monotonic() - self._busy_since if self._busy_since is not None else 0.0
            if busy >= STUCK_S:
                return False
            self._took.clear()
            try:
                await asyncio.wait_for(self._took.wait(), timeout=STUCK_S - busy)
            except TimeoutError:
                pass
        return True

    async def _enqueue(self, joined: np.ndarray | None) -> None:
        if joined is None:
            return
        self.arrived.clear()
        await self._room()
        if self.gap and not self._queue.full():
            self._queue.put_nowait(self.gap)
            log.warning("call %s: backlog drained; %.1f s of audio were dropped (kept as silence)", self.key,
                        self.gap / self.rate)
            self.gap = 0
        if self.gap or self._queue.full():
            if not self.gap:
                log.warning("call %s: %g s of audio queued (the session is stuck); dropping audio until it "
                            "catches up", self.key, MAX_BACKLOG_S)
            n = joined.shape[1]
            self.gap += n
            self.dropped += n
            self.hub.metrics.dropped_seconds.labels(self.source).inc(n / self.rate)
            return
        self._queue.put_nowait(joined)

    async def tick(self) -> None:
        """Take results that arrived while no audio came (a pause)."""
        self._raise_failure()
        if self.arrived.is_set() and self._queue.empty():
            self.arrived.clear()
            self._queue.put_nowait(POLL)

    async def _drain(self) -> None:
        """Send what is held and queued (waiting for room: input is over); the pump ends (raises what
        made it fail)."""
        joined = self._take_held()
        if self.gap:
            await self._queue.put(self.gap)
            self.gap = 0
        if joined is not None:
            await self._queue.put(joined)
        await self._queue.put(None)
        if self._pump is not None:
            await self._pump
        self._raise_failure()

    async def _follow(self) -> None:
        timeout_s = self.hub.settings.timeout_s
        deadline = time.monotonic() + timeout_s
        while self.session.outstanding:
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout=FOLLOW_BLOCK_S)
            except TimeoutError:
                pass
            self.arrived.clear()
            if await self.hub.run(self.session.poll, 0.0 if self.hub.aconnection is not None else FOLLOW_BLOCK_S):
                deadline = time.monotonic() + timeout_s
            elif time.monotonic() > deadline:
                raise self.session.stalled(timeout_s)

    async def finish(self, reason: str | None = None) -> None:
        """Input is over: send the rest, wait for every record, publish ``call_ended`` (``reason`` None:
        completed/incomplete; ``disconnected`` and ``error`` complete the results first as well)."""
        if self.finished:
            return
        error = None
        try:
            await self._drain()
        except Exception as exc:  # the session failed while the audio was queued
            await self.abort(f"{type(exc).__name__}: {exc}")
            return
        try:
            await self.hub.run(self.session.close)
            await self._follow()
        except StalledError as exc:
            error = str(exc)
            await self.hub.run(self.session.salvage)
            log.warning("call %s: incomplete: %s", self.key, error)
        except Exception as exc:  # Redis gone for good, or a refused batch
            await self.abort(f"{type(exc).__name__}: {exc}")
            return
        self.finished = True
        self.hub.forget(self)
        self._end_fields()
        await self.hub.run(lambda: self.session.end(reason=reason if error is None else "incomplete", error=error))
        log.info("call %s: ended (%s), %d record(s)", self.key, reason or "completed", self.records)

    def _end_fields(self) -> None:
        if self.dropped:
            self.session.calls.end_fields["dropped_audio_s"] = round(self.dropped / self.rate, 3)

    async def abort(self, why: str) -> None:
        """End without waiting for results (Redis is gone): ``call_ended`` with reason ``error`` (best effort)."""
        if self.finished:
            return
        self.finished = True
        self.hub.forget(self)
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
            try:
                await self._pump  # a push running in the pool finishes there; its result is dropped
            except (asyncio.CancelledError, Exception):
                pass
        self.hub.metrics.errors.labels(self.source).inc()
        log.error("call %s: session ended: %s", self.key, why)
        self._end_fields()
        try:
            await self.hub.run(lambda: self.session.end(reason="error", error=why))
        except Exception as exc:  # events are best effort; the log line above says what happened
            log.warning("call %s: call_ended not written: %s", self.key, exc)
