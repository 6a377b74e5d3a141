"""Where batches go: to RQ workers through Redis (:class:`RedisBackend`), or in-process.

The batch types, the backend interface and the embedded backend live in :mod:`producer.backend`
(re-exported here); both backends build the same JSON payload and the same int16 PCM, so their
records match.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from callevents.writer import RedisLink
from models.bundle import Spec
from models.ids import key_id
from producer import retry
from producer.backend import Backend, Batch, Batcher, EmbeddedBackend, StalledError  # noqa: F401  (re-exported)
from producer.settings import DEFAULT_RESEND_AFTER_S
from workers.contract import (
    FAILURE_CALLBACK,
    JOB_FAILURE_TTL_S,
    JOB_FUNC,
    JOB_RESULT_TTL_S,
    JOB_TIMEOUT_S,
    PCM_TTL_S,
    RESULTS_MAXLEN,
    RESULTS_TTL_S,
    claim_field,
    claims_key,
    decode_entry,
    encode_entry,
    job_id,
    make_payload,
    pcm_encode,
    pcm_key,
    results_key,
)

#: ``ser:epoch:<stream id>``: set when the first batch is sent; gone means Redis lost the call's keys.
EPOCH_PREFIX = "ser:epoch:"

#: Seconds between queue-length checks while the queue is full.
BACKPRESSURE_POLL_S = 0.05
#: Most stream entries read per XREAD.
XREAD_COUNT = 1000
#: Look for overdue batches at most this often (seconds).
RESEND_CHECK_S = 0.5


@dataclass
class Pending:
    """A sent batch without all its records yet; its PCM stays here until they arrive (re-sends)."""

    base_jid: str
    channel: str
    items: list[tuple[int, float, float]]
    pcm: bytes
    left: set[int]  # seqs without a record
    sent_at: float
    attempt: int = 0
    speaker: np.ndarray | None = None  # the batch's speaker vectors, when the model takes them
    history: np.ndarray | None = None  # the channel's history before the batch (models.history), re-sent as is

    @property
    def jid(self) -> str:
        return self.base_jid if self.attempt == 0 else f"{self.base_jid}-r{self.attempt}"


class RedisBackend(Backend):
    """Enqueues RQ jobs (JSON, PCM in its own key) and follows the call's results stream.

    Delivery (docs/pipeline.md, "Delivery guarantees"): every sent batch stays in :attr:`pending`
    (with its int16 PCM) until each of its segments has a record; at most ``max_pending`` batches
    are pending (the producer stops reading meanwhile). A batch without a result ``resend_after_s``
    after it was sent, whose job is not waiting in the queue (a worker died with it, or Redis lost
    it), is sent again under a new attempt id (``<job id>-r<n>``, its own PCM key). Redis errors
    (ConnectionError, TimeoutError) are retried with back-off for up to ``timeout_s``; after a
    reconnect every pending batch is re-sent (a restarted Redis without persistence has lost PCM
    keys and jobs) and the stream is read again from the start. Duplicates are dropped by the
    collector on ``(channel, seq)``.
    """

    def __init__(self, *, spec: Spec, stream_id: str, connection: Any, queue: str, max_pending: int,
                 timeout_s: float, resend_after_s: float = DEFAULT_RESEND_AFTER_S) -> None:
        from rq import Queue
        from rq.serializers import JSONSerializer

        super().__init__(spec=spec, stream_id=stream_id)
        self.conn = connection
        self.queue = Queue(queue, connection=connection, serializer=JSONSerializer)
        self.max_pending, self.timeout_s, self.resend_after_s = max_pending, timeout_s, resend_after_s
        self.key = results_key(stream_id)
        self.last_id: bytes | str = "0-0"
        self.backpressure_s = 0.0  # total time spent waiting for room in the queue
        self.queue_seen: int | None = None  # the queue's length at the last LLEN (or send)
        self.pending: dict[str, Pending] = {}
        self._owner: dict[tuple[str, int], str] = {}  # (channel, seq) -> base job id of its pending batch
        self.retried = 0  # batches sent again (overdue or after a reconnect)
        self.reconnects = 0  # connection errors survived
        self.restarts = 0  # times Redis was found to have lost this call's keys
        self.epoch_key = EPOCH_PREFIX + key_id(stream_id)
        self.claims = claims_key(stream_id)
        self._end: dict[str, Any] | None = None
        self.reread = False
        self._checked = time.monotonic()
        #: Whether Redis answers, shared with the call's events and metrics (CallSession wires them).
        self.link = RedisLink()

    # --- Redis calls, retried across a lost connection -------------------------------------------
    def _retry(self, fn: Any) -> Any:
        out = retry.call(fn, timeout_s=self.timeout_s, reconnect=self._reconnect)
        self.link.answered()
        return out

    def _reconnect(self, first: Exception) -> None:
        """Wait (back-off, at most ``timeout_s`` since Redis was first found gone: :attr:`link`) until
        Redis answers, then re-send what it may have lost. Meanwhile the call's best-effort writers
        (events, metrics) skip Redis; after ``timeout_s`` they go on skipping it."""
        since = self.link.lost()
        retry.wait_for_redis(self.conn, first, timeout_s=self.timeout_s, recover=self._recover, since=since)
        self.link.answered()
        self.reconnects += 1

    def _recover(self) -> None:
        """Redis may have lost this call's keys: re-send every pending batch, publish the end record
        again, read the stream from the start (duplicates are dropped), and mark the epoch."""
        for p in list(self.pending.values()):
            self._send(p, again=True)
        if self._end is not None:
            self._publish_end()
        self.last_id = "0-0"
        self.reread = True  # a shared reader starts this stream again from its start
        self._mark()

    def _mark(self) -> None:
        self.conn.set(self.epoch_key, b"1", ex=RESULTS_TTL_S)

    def check(self) -> None:
        """At most every RESEND_CHECK_S: notice a Redis that lost our keys (a restart without
        persistence is invisible to a client that reconnects transparently: the epoch key is gone),
        and re-send pending batches older than ``resend_after_s`` whose job is not waiting in the queue."""
        now = time.monotonic()
        if now - self._checked < RESEND_CHECK_S:
            return
        self._checked = now
        if self.pending or self._end is not None:
            if not self._retry(lambda: self.conn.exists(self.epoch_key)):
                self._retry(self._lost)
                return
        if self.resend_after_s > 0:
            self.check_overdue(now)

    # --- sending ----------------------------------------------------------------------------------
    def queue_length(self) -> int:
        self.queue_seen = int(self._retry(lambda: self.conn.llen(self.queue.key)))
        return self.queue_seen

    def _load(self, *, fresh: bool = True) -> int:
        """Max of the queue's length and this producer's unacknowledged batches. ``fresh=False``
        uses the length the last send's MULTI/EXEC returned (no round trip): later pushes by this
        producer are counted there, and pops by workers only shorten the queue."""
        seen = self.queue_seen if not fresh and self.queue_seen is not None else self.queue_length()
        return max(seen, len(self.pending))

    def _wait_for_room(self, on_idle: Any) -> None:
        length = self._load(fresh=False)
        started = time.monotonic()
        deadline = started + self.timeout_s
        if length >= self.max_pending:
            try:
                self._wait(length, deadline, on_idle)
            finally:
                self.backpressure_s += time.monotonic() - started

    def _wait(self, length: int, deadline: float, on_idle: Any) -> None:
        while length >= self.max_pending:
            if on_idle is not None and on_idle(BACKPRESSURE_POLL_S):
                deadline = time.monotonic() + self.timeout_s
            else:
                time.sleep(BACKPRESSURE_POLL_S)
                self.check()
            now_length = self._load()
            if now_length < length:
                deadline = time.monotonic() + self.timeout_s
            length = now_length
            if time.monotonic() > deadline:
                raise StalledError(f"queue {self.queue.name!r} stayed at {length} job(s) (--max-pending "
                                   f"{self.max_pending}) for {self.timeout_s:g} s: are workers running?")

    def _send(self, p: Pending, *, again: bool) -> None:
        """Store the PCM and enqueue the job in one MULTI/EXEC (a re-send: next attempt id)."""
        from rq import Callback

        if again:
            p.attempt += 1
            self.retried += 1
        jid = p.jid
        key = pcm_key(jid)
        pipe = self.conn.pipeline()
        pipe.multi()  # MULTI first: RQ adds its commands to this transaction
        pipe.exists(self.epoch_key)  # free restart detection on every send
        if again:  # the claims may be gone with a restarted Redis: keep re-runs of the call idempotent
            pipe.hset(self.claims, mapping={claim_field(p.channel, s): p.base_jid for s, _, _ in p.items})
            pipe.expire(self.claims, RESULTS_TTL_S)
        pipe.set(key, p.pcm, ex=PCM_TTL_S)
        payload = make_payload(stream_id=self.stream_id, channel=p.channel, model_id=self.spec.model_id,
                               sample_rate=self.spec.sample_rate, window=self.window, items=p.items, pcm_key=key,
                               speaker=p.speaker, history=p.history)
        self.queue.enqueue_call(
            JOB_FUNC, args=(payload,), job_id=jid, timeout=JOB_TIMEOUT_S,
            result_ttl=JOB_RESULT_TTL_S, failure_ttl=JOB_FAILURE_TTL_S, ttl=PCM_TTL_S,
            on_failure=Callback(FAILURE_CALLBACK), pipeline=pipe,
        )
        pipe.llen(self.queue.key)  # the queue's length after this push, for the next backpressure check
        replies = pipe.execute()
        epoch_alive, self.queue_seen = replies[0], int(replies[-1])
        p.sent_at = time.monotonic()
        if not again and not epoch_alive:
            self._lost()

    def _lost(self) -> None:
        """Redis no longer has this call's epoch key: it restarted (or was flushed) since."""
        self.restarts += 1
        self._recover()

    def _claim(self, channel: str, seqs: list[int], jid: str) -> list[bool]:
        """Claim each segment for job ``jid`` (``HSETNX`` in the call's claims hash); True: newly claimed."""
        def claim() -> list[Any]:
            pipe = self.conn.pipeline(transaction=False)
            for seq in seqs:
                pipe.hsetnx(self.claims, claim_field(channel, seq), jid)
            pipe.expire(self.claims, RESULTS_TTL_S)
            return list(pipe.execute())

        return [bool(won) for won in self._retry(claim)[:-1]]

    def _add_pending(self, jid: str, channel: str, items: list[tuple[int, float, float]],
                     segments: list[np.ndarray], speaker: list[np.ndarray], history: np.ndarray | None) -> Pending:
        p = Pending(base_jid=jid, channel=channel, items=items, pcm=pcm_encode(np.stack(segments)),
                    left={int(s) for s, _, _ in items}, sent_at=time.monotonic(),
                    speaker=np.stack(speaker) if speaker else None, history=history)
        self.pending[jid] = p
        for seq in p.left:
            self._owner[(p.channel, seq)] = jid
        return p

    def submit(self, batch: Batch, *, on_idle: Any = None) -> list[dict[str, Any]]:
        """Claim the batch's segments one by one and send those not claimed before. Segments an earlier
        run claimed (whatever its batch size) are not sent now but kept pending under ``<job id>-c``:
        their records usually are in the stream already; if not, the overdue check sends them again
        ``resend_after_s`` later (that job id is never queued)."""
        self.payload(batch, pcm_key("x"))  # over-limit batches are refused before anything is sent
        self._wait_for_room(on_idle)
        if not self.jobs and not self.pending:
            self._retry(self._mark)
        jid = job_id(self.stream_id, batch.channel, batch.items[0][0])
        won = self._claim(batch.channel, [int(s) for s, _, _ in batch.items], jid)
        new = [i for i, w in enumerate(won) if w]
        old = [i for i, w in enumerate(won) if not w]
        if old:  # sent by an earlier run: follow, and re-send only if no record comes
            self.resent += len(old)
            self._add_pending(f"{job_id(self.stream_id, batch.channel, batch.items[old[0]][0])}-c", batch.channel,
                              [batch.items[i] for i in old], [batch.segments[i] for i in old],
                              [batch.speaker[i] for i in old] if batch.speaker else [], batch.history)
        if not new:
            return []
        jid = job_id(self.stream_id, batch.channel, batch.items[new[0]][0])
        p = self._add_pending(jid, batch.channel, [batch.items[i] for i in new], [batch.segments[i] for i in new],
                              [batch.speaker[i] for i in new] if batch.speaker else [], batch.history)

        def first_send() -> None:
            if not p.attempt:  # after a reconnect (attempt > 0) the batch has been sent already
                self._send(p, again=False)

        try:
            self._retry(first_send)
        except BaseException:
            self._forget(p)
            try:  # the job never left: let a re-send enqueue it
                self.conn.hdel(self.claims, *[claim_field(p.channel, s) for s, _, _ in p.items])
            except Exception:
                pass
            raise
        self.jobs += 1
        return []

    def _forget(self, p: Pending) -> None:
        self.pending.pop(p.base_jid, None)
        for seq in p.left:
            self._owner.pop((p.channel, seq), None)

    def check_overdue(self, now: float) -> None:
        """Re-send pending batches older than ``resend_after_s`` whose job is not waiting in the queue."""
        overdue = [p for p in self.pending.values() if now - p.sent_at >= self.resend_after_s]
        if not overdue:
            return

        def statuses() -> list[Any]:
            pipe = self.conn.pipeline(transaction=False)
            for p in overdue:
                pipe.hget(self.queue.job_class.key_for(p.jid), "status")
            return list(pipe.execute())

        for p, status in zip(overdue, self._retry(statuses), strict=True):
            if status in (b"queued", "queued"):
                p.sent_at = now  # no worker has taken it yet: the deadline counts from when one does
                continue
            self._retry(functools.partial(self._resend_unless_sent, p, p.attempt))

    def _resend_unless_sent(self, p: Pending, attempt: int) -> None:
        if p.attempt == attempt:  # a reconnect in between has re-sent it already
            self._send(p, again=True)

    # --- receiving --------------------------------------------------------------------------------
    def _ack(self, record: dict[str, Any]) -> None:
        if record.get("kind") not in ("result", "failure"):
            return
        jid = self._owner.pop((str(record.get("channel")), int(record.get("seq", -1))), None)
        p = self.pending.get(jid) if jid is not None else None
        if p is not None:
            p.left.discard(int(record["seq"]))
            if not p.left:
                del self.pending[jid]  # type: ignore[arg-type]

    def _decode(self, entries: list[Any]) -> list[dict[str, Any]]:
        out = []
        for entry_id, fields in entries:
            self.last_id = entry_id
            try:
                rec = decode_entry(fields, embedding=True)
            except ValueError:
                continue  # not ours: a consumer's own annotation, say
            self._ack(rec)
            out.append(rec)
        return out

    def poll(self, block_s: float = 0.0) -> list[dict[str, Any]]:
        block = max(1, int(block_s * 1000)) if block_s > 0 else None
        reply = self._retry(lambda: self.conn.xread({self.key: self.last_id}, count=XREAD_COUNT, block=block))
        out = []
        for _, entries in reply or []:
            out.extend(self._decode(entries))
        self.check()
        return out

    def accept(self, entries: list[Any]) -> list[dict[str, Any]]:
        """Entries of this call's results stream read by a shared reader (which reads the stream from
        the start again while :attr:`reread` is set: after a reconnect, see :meth:`_recover`)."""
        out = self._decode(entries)
        self.check()
        return out

    def _publish_end(self, *, check: bool = False) -> None:
        assert self._end is not None
        pipe = self.conn.pipeline(transaction=False)
        pipe.exists(self.epoch_key)
        pipe.xadd(self.key, encode_entry(self._end), maxlen=RESULTS_MAXLEN, approximate=True)
        pipe.expire(self.key, RESULTS_TTL_S)
        pipe.set(self.epoch_key, b"1", ex=RESULTS_TTL_S)
        epoch_alive = pipe.execute()[0]
        if check and self.jobs and not epoch_alive:
            self._lost()

    def finish(self, end_record: dict[str, Any], *, patient: bool = True) -> None:
        import redis

        self._end = end_record
        if patient:
            self._retry(lambda: self._publish_end(check=True))
            return
        try:
            self._publish_end()
        except redis.RedisError:
            pass  # the run is giving up already, and says why

    def publish(self, records: list[dict[str, Any]]) -> None:
        """XADD ``records`` to the call's results stream (once: not again after a reconnect; a re-run
        of the same stream id adds them again, readers keep the first per ``(kind, channel, seq)``)."""
        if not records:
            return

        def add() -> None:
            pipe = self.conn.pipeline(transaction=False)
            for rec in records:
                pipe.xadd(self.key, encode_entry(rec), maxlen=RESULTS_MAXLEN, approximate=True)
            pipe.expire(self.key, RESULTS_TTL_S)
            pipe.execute()

        self._retry(add)
