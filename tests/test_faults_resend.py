"""A call re-sent after a crash with another batch size (a ``--realtime`` run, batch 1, killed midway,
then the file again at batch 16): every segment gets its record, nothing is classified twice that
already has one (docs/pipeline.md, "Idempotent enqueue")."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import redis
from test_faults import drain

from models.runtime import EmotionModel
from producer.dispatch import Batch, RedisBackend
from workers.contract import DEFAULT_QUEUE, PCM_PREFIX

QUEUE_KEY = f"rq:queue:{DEFAULT_QUEUE}"
SEGS = [(0.3 * np.random.default_rng(s).standard_normal(24000)).astype(np.float32) for s in range(16)]


def batch(seqs: range) -> Batch:
    return Batch("ch0", [(s, 3.0 * s, 3.0 * s + 3) for s in seqs], [SEGS[s] for s in seqs])


@pytest.fixture(scope="module")
def model(tiny_bundle_dir: Path) -> EmotionModel:
    return EmotionModel(tiny_bundle_dir)


def backend(conn: redis.Redis, model: EmotionModel, resend_after_s: float = 30.0) -> RedisBackend:
    return RedisBackend(spec=model.spec, stream_id="crash", connection=conn, queue=DEFAULT_QUEUE, max_pending=64,
                        timeout_s=10, resend_after_s=resend_after_s)


def collect(url: str, b: RedisBackend, model: EmotionModel, want: int, timeout: float = 20.0) -> set[int]:
    seqs: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seqs) < want and time.monotonic() < deadline:
        drain(url, model)
        b._checked = 0.0  # (checks run at most every 0.5 s)
        seqs |= {r["seq"] for r in b.poll(0.1) if r["kind"] == "result"}
    return seqs


def test_resend_with_a_bigger_batch_sends_what_the_crashed_run_never_did(redis_url: str,
                                                                         model: EmotionModel) -> None:
    conn = redis.Redis.from_url(redis_url)
    first = backend(conn, model)
    for s in range(6):  # the --realtime run (batch 1) got as far as seq 5, then died
        first.submit(batch(range(s, s + 1)))
    drain(redis_url, model)
    again = backend(conn, model)
    again.submit(batch(range(16)))  # the file re-sent at batch 16
    assert conn.llen(QUEUE_KEY) == 1 and again.resent == 6  # only seqs 6-15 left in one job
    assert collect(redis_url, again, model, 16) == set(range(16))
    assert not again.pending
    conn.close()


def test_a_claimed_segment_whose_job_was_lost_is_sent_again(redis_url: str, model: EmotionModel) -> None:
    conn = redis.Redis.from_url(redis_url)
    first = backend(conn, model)
    first.submit(batch(range(0, 4)))  # batch 4: claimed and queued, then lost with the crash
    conn.delete(QUEUE_KEY, *conn.keys(PCM_PREFIX + "*"))
    again = backend(conn, model, resend_after_s=0.2)
    again.submit(batch(range(0, 2)))
    again.submit(batch(range(2, 4)))
    assert conn.llen(QUEUE_KEY) == 0 and again.resent == 4  # all claimed: nothing sent at once
    assert collect(redis_url, again, model, 4) == set(range(4))  # re-sent when no record came
    assert again.retried == 2
    conn.close()
