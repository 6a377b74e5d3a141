"""Where batches go: in-process (embedded, no Redis) or to RQ workers through Redis.

Both backends build the same JSON payload and the same int16 PCM, and the embedded one calls
the very function the RQ job calls (:func:`workers.contract.classify`), so their records match.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.bundle import Spec
from workers.contract import (
    FAILURE_CALLBACK,
    JOB_FAILURE_TTL_S,
    JOB_FUNC,
    JOB_RESULT_TTL_S,
    JOB_TIMEOUT_S,
    PCM_TTL_S,
    RESULTS_MAXLEN,
    RESULTS_TTL_S,
    Classifier,
    claim_key,
    classify,
    decode_entry,
    encode_entry,
    job_id,
    make_payload,
    pcm_encode,
    pcm_key,
    results_key,
)

#: Seconds between queue-length checks while the queue is full.
BACKPRESSURE_POLL_S = 0.05
#: Most stream entries read per XREAD.
XREAD_COUNT = 1000


class StalledError(Exception):
    """No progress for the configured timeout."""


@dataclass
class Batch:
    channel: str
    items: list[tuple[int, float, float]] = field(default_factory=list)  # (seq, start_s, end_s)
    segments: list[np.ndarray] = field(default_factory=list)


class Batcher:
    """Groups each channel's voiced segments into batches of ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._open: dict[str, Batch] = {}

    def add(self, channel: str, seq: int, start_s: float, end_s: float, samples: np.ndarray) -> Batch | None:
        batch = self._open.setdefault(channel, Batch(channel))
        batch.items.append((seq, start_s, end_s))
        batch.segments.append(samples)
        if len(batch.items) >= self.size:
            return self._open.pop(channel)
        return None

    def flush(self) -> list[Batch]:
        out = list(self._open.values())
        self._open.clear()
        return out


class Backend:
    def __init__(self, *, spec: Spec, stream_id: str) -> None:
        self.spec, self.stream_id = spec, stream_id
        self.window = spec.segment.samples(spec.sample_rate)[0]
        self.jobs = 0
        self.resent = 0  # batches already claimed by an earlier send (idempotent re-send)

    def payload(self, batch: Batch, key: str) -> dict[str, Any]:
        return make_payload(stream_id=self.stream_id, channel=batch.channel, model_id=self.spec.model_id,
                            sample_rate=self.spec.sample_rate, window=self.window, items=batch.items,
                            pcm_key=key)

    def submit(self, batch: Batch, *, on_idle: Any = None) -> list[dict[str, Any]]:
        """Send a batch; returns any records already available."""
        raise NotImplementedError

    def poll(self, block_s: float = 0.0) -> list[dict[str, Any]]:
        return []

    def finish(self, end_record: dict[str, Any]) -> None:
        """Input is over: announce it (distributed mode publishes an ``end`` record)."""

    def queue_length(self) -> int:
        return 0


class EmbeddedBackend(Backend):
    """Runs the job function in this process, with no Redis."""

    def __init__(self, *, spec: Spec, stream_id: str, model: Classifier) -> None:
        super().__init__(spec=spec, stream_id=stream_id)
        self.model = model

    def submit(self, batch: Batch, *, on_idle: Any = None) -> list[dict[str, Any]]:
        self.jobs += 1
        return classify(self.model, self.payload(batch, ""), pcm_encode(np.stack(batch.segments)))


class RedisBackend(Backend):
    """Enqueues RQ jobs (JSON, PCM in its own key) and follows the call's results stream."""

    def __init__(self, *, spec: Spec, stream_id: str, connection: Any, queue: str, max_pending: int,
                 timeout_s: float) -> None:
        from rq import Queue
        from rq.serializers import JSONSerializer

        super().__init__(spec=spec, stream_id=stream_id)
        self.conn = connection
        self.queue = Queue(queue, connection=connection, serializer=JSONSerializer)
        self.max_pending, self.timeout_s = max_pending, timeout_s
        self.key = results_key(stream_id)
        self.last_id: bytes | str = "0-0"
        self.backpressure_s = 0.0  # total time spent waiting for room in the queue

    def queue_length(self) -> int:
        return int(self.conn.llen(self.queue.key))

    def _wait_for_room(self, on_idle: Any) -> None:
        length = self.queue_length()
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
            now_length = self.queue_length()
            if now_length < length:
                deadline = time.monotonic() + self.timeout_s
            length = now_length
            if time.monotonic() > deadline:
                raise StalledError(f"queue {self.queue.name!r} stayed at {length} job(s) (--max-pending "
                                   f"{self.max_pending}) for {self.timeout_s:g} s: are workers running?")

    def submit(self, batch: Batch, *, on_idle: Any = None) -> list[dict[str, Any]]:
        from rq import Callback

        self._wait_for_room(on_idle)
        jid = job_id(self.stream_id, batch.channel, batch.items[0][0])
        if not self.conn.set(claim_key(jid), b"1", nx=True, ex=RESULTS_TTL_S):
            self.resent += 1
            return []
        key = pcm_key(jid)
        pipe = self.conn.pipeline()
        pipe.multi()  # MULTI first: RQ adds its commands to this transaction
        pipe.set(key, pcm_encode(np.stack(batch.segments)), ex=PCM_TTL_S)
        self.queue.enqueue_call(
            JOB_FUNC, args=(self.payload(batch, key),), job_id=jid, timeout=JOB_TIMEOUT_S,
            result_ttl=JOB_RESULT_TTL_S, failure_ttl=JOB_FAILURE_TTL_S, ttl=PCM_TTL_S,
            on_failure=Callback(FAILURE_CALLBACK), pipeline=pipe,
        )
        try:
            pipe.execute()
        except BaseException:
            self.conn.delete(claim_key(jid))  # the job never left: let a re-send enqueue it
            raise
        self.jobs += 1
        return []

    def poll(self, block_s: float = 0.0) -> list[dict[str, Any]]:
        block = max(1, int(block_s * 1000)) if block_s > 0 else None
        reply = self.conn.xread({self.key: self.last_id}, count=XREAD_COUNT, block=block)
        out = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                self.last_id = entry_id
                try:
                    out.append(decode_entry(fields))
                except ValueError:
                    continue  # not ours: a consumer's own annotation, say
        return out

    def finish(self, end_record: dict[str, Any]) -> None:
        pipe = self.conn.pipeline(transaction=False)
        pipe.xadd(self.key, encode_entry(end_record), maxlen=RESULTS_MAXLEN, approximate=True)
        pipe.expire(self.key, RESULTS_TTL_S)
        pipe.execute()
