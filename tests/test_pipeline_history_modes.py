"""The history contract in every mode (models.history): a record's ``history`` is the number of earlier
segments of its channel (with a result) up to ``max_segments``, whatever the batch size, and embedded
file runs, distributed file runs (a real worker) and live runs (the session pushed in 20 ms blocks,
batch 1) of one call give the same records, record for record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import soundfile as sf
from rq import Queue
from rq.serializers import JSONSerializer
from test_pipeline_redis import embedded, producer_proc, records, wait_for, worker_proc

from models.bundle import load_bundle
from producer.dispatch import RedisBackend
from producer.session import CallSession
from workers.contract import DEFAULT_QUEUE, failure_records
from workers.job import publish

MAX = 10  # the shipped model's max_segments
SR = 8000
#: Segments per channel of :func:`long_call` (3 s windows, 3 s hop; the silent windows are skipped).
SEGMENTS = {"ch0": 12, "ch1": 13}


@pytest.fixture(scope="module")
def bundle10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tinybundle import make_tiny_bundle

    path = tmp_path_factory.mktemp("history10")
    make_tiny_bundle(path, history=True, history_segments=MAX)
    return path


@pytest.fixture(scope="module")
def long_call(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """42 s of seeded stereo noise, a different level every 3 s window; ch0 silent at 9-15 s, ch1 at
    21-24 s: 12 and 13 voiced segments."""
    rng = np.random.default_rng(7)
    n = 42 * SR
    gains = np.repeat(0.05 + 0.3 * rng.random((14, 2)), 3 * SR, axis=0)
    y = (rng.standard_normal((n, 2)) * gains).astype(np.float32)
    y[9 * SR : 15 * SR, 0] = 0.0
    y[21 * SR : 24 * SR, 1] = 0.0
    path = tmp_path_factory.mktemp("long-call") / "call.wav"
    sf.write(path, np.clip(y, -1, 1), SR, subtype="PCM_16")
    return path


def run_embedded(call: Path, bundle: Path, batch: int) -> list[dict[str, Any]]:
    code, out, err = embedded([str(call), "--model", str(bundle), "--format", "jsonl", "--batch", str(batch),
                               "--stream-id", "same", "--timeout", "30"])
    assert code == 0, err
    return records(out)


def strip(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "stream_id"} for r in recs]


def session(url: str, bundle: Path, stream_id: str, *, batch: int, resend_after_s: float = 30.0
            ) -> tuple[CallSession, list[dict[str, Any]]]:
    spec = load_bundle(bundle).spec
    conn = redis.Redis.from_url(url)
    backend = RedisBackend(spec=spec, stream_id=stream_id, connection=conn, queue=DEFAULT_QUEUE, max_pending=64,
                           timeout_s=30, resend_after_s=resend_after_s)
    got: list[dict[str, Any]] = []
    s = CallSession(spec=spec, backend=backend, names=["ch0", "ch1"], in_rate=SR, batch=batch, connection=conn,
                    call_id=stream_id, source="test", sink=got.extend)
    s.start()
    return s, got


def test_embedded_history_grows_by_one_per_earlier_segment_whatever_the_batch(long_call: Path,
                                                                              bundle10: Path) -> None:
    runs = {b: run_embedded(long_call, bundle10, b) for b in (16, 1, 5)}
    recs = runs[16]
    assert all(r["kind"] == "result" for r in recs)
    for ch, n in SEGMENTS.items():
        assert [r["history"] for r in recs if r["channel"] == ch] == [min(i, MAX) for i in range(n)]
    assert max(r["history"] for r in recs) == MAX  # fails where history never grows past 0
    assert runs[1] == recs and runs[5] == recs  # record for record, probabilities included


def test_distributed_and_live_runs_give_the_embedded_records(redis_url: str, long_call: Path,
                                                            bundle10: Path) -> None:
    want = strip(run_embedded(long_call, bundle10, 16))
    worker = worker_proc(redis_url, bundle10, "--processes", "2")
    try:
        # a file through Redis, batches of 4: without waiting per channel, every batch would be in flight
        # before the first result came back
        prod = producer_proc(redis_url, str(long_call), "--model", str(bundle10), "--format", "jsonl",
                             "--batch", "4", "--stream-id", "same-d", "--timeout", "30")
        out, err = prod.communicate(timeout=120)
        assert prod.returncode == 0, err
        assert strip(records(out)) == want
        # live: the session pushed 20 ms at a time, batch 1 (as the gateway drives it)
        s, got = session(redis_url, bundle10, "same-l", batch=1)
        y, _ = sf.read(long_call, dtype="float32")
        for a in range(0, len(y), SR // 50):
            s.push(np.ascontiguousarray(y[a : a + SR // 50].T))
        s.close()
        s.follow(timeout_s=30)
        s.end()
        assert strip([r for r in got if r["kind"] != "turn"]) == want
    finally:
        worker.terminate()
        worker.communicate(timeout=60)


def test_a_channel_waits_for_its_previous_job_and_a_failed_segment_adds_nothing(redis_url: str, long_call: Path,
                                                                                bundle10: Path) -> None:
    s, got = session(redis_url, bundle10, "held", batch=2, resend_after_s=0)
    y, _ = sf.read(long_call, dtype="float32")
    s.push(np.ascontiguousarray(y.T))
    s.close()
    conn = redis.Redis.from_url(redis_url)
    payloads = [job.args[0] for job in Queue(DEFAULT_QUEUE, connection=conn, serializer=JSONSerializer).jobs]
    # one job per channel is out, with no history yet; the rest of the call waits for their records
    assert sorted(p["channel"] for p in payloads) == ["ch0", "ch1"]
    assert all(p["v"] == 2 and p["history_count"] == 0 and p["history"] == "" for p in payloads)
    assert s.held == (SEGMENTS["ch0"] // 2 - 1) + (-(-SEGMENTS["ch1"] // 2) - 1)
    # ch0's first job fails (as RQ's on_failure reports a crashed job): its two segments add nothing
    first = next(p for p in payloads if p["channel"] == "ch0")
    Queue(DEFAULT_QUEUE, connection=conn, serializer=JSONSerializer).remove(f"{first['pcm_key'][8:]}")
    publish(conn, first, failure_records(first, "job failed: test"))
    wait_for(lambda: (s.poll(0.05) or True) and len(Queue(DEFAULT_QUEUE, connection=conn).jobs) == 2, timeout=20)
    nxt = [j.args[0] for j in Queue(DEFAULT_QUEUE, connection=conn, serializer=JSONSerializer).jobs
           if j.args[0]["channel"] == "ch0"]
    assert [p["history_count"] for p in nxt] == [0]
    worker = worker_proc(redis_url, bundle10, "--processes", "1")
    try:
        s.follow(timeout_s=30)
    finally:
        worker.terminate()
        worker.communicate(timeout=60)
    recs = [r for r in got if r["kind"] != "turn"]
    ch0 = [r for r in recs if r["channel"] == "ch0"]
    assert [r["kind"] for r in ch0[:2]] == ["failure", "failure"]
    assert [r["history"] for r in ch0[2:]] == [min(i, MAX) for i in range(SEGMENTS["ch0"] - 2)]
    assert [r["history"] for r in recs if r["channel"] == "ch1"] == [min(i, MAX) for i in range(SEGMENTS["ch1"])]


def test_a_resent_job_carries_the_history_it_carried_the_first_time(redis_url: str, bundle10: Path) -> None:
    from producer.dispatch import Batch

    spec = load_bundle(bundle10).spec
    conn = redis.Redis.from_url(redis_url)
    backend = RedisBackend(spec=spec, stream_id="again", connection=conn, queue=DEFAULT_QUEUE, max_pending=8,
                           timeout_s=10, resend_after_s=30)
    past = np.arange(3 * 64, dtype=np.float32).reshape(3, 64) / 100
    window = spec.segment.samples(spec.sample_rate)[0]
    backend.submit(Batch("ch0", [(5, 15.0, 18.0)], [np.zeros(window, np.float32)], history=past))
    (p,) = backend.pending.values()
    backend._send(p, again=True)  # as after a worker died with it, or a Redis restart
    q = Queue(DEFAULT_QUEUE, connection=conn, serializer=JSONSerializer)
    first, again = (q.fetch_job(jid).args[0] for jid in (p.base_jid, p.jid))
    assert p.jid.endswith("-r1") and first["history_count"] == 3 and first["history"] == again["history"]
