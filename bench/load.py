"""End to end on loopback: producer -> Redis -> one worker process -> results read back.

Everything here goes through the real code: :func:`producer.pipeline.run` for throughput,
:class:`producer.dispatch.RedisBackend` for enqueue cost and paced load, and ``ser-worker``
(``python -m workers.cli --processes 1``) as a separate process.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Segments kept in the pool the benchmark cycles through (distinct noise, all voiced).
POOL = 64
#: Concurrent calls (results streams) in a paced run.
PACED_CALLS = 16
#: Seconds to wait for a worker to register (model load + warm-up) and for stragglers.
WORKER_START_S = 60.0
DRAIN_S = 30.0


def segment_pool(window: int, *, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.2 * rng.standard_normal(window)).astype(np.float32) for _ in range(POOL)]


def rss_mb(pid: int) -> tuple[float, float]:
    """``(VmRSS, VmHWM)`` of a process in MB (from /proc/<pid>/status)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]

    @property
    def child(self) -> int:
        """Pid of the pool's (single) worker process."""
        kids = children(self.proc.pid)
        if not kids:
            raise RuntimeError("ser-worker has no worker process")
        return kids[-1]


@contextmanager
def worker(url: str, queue: str, model_dir: str, *, env: dict[str, str] | None = None,
           log: Path | None = None) -> Iterator[Worker]:
    """Run ``ser-worker --processes 1`` until the block ends; yields once it is registered (warm).
    ``log``: write the worker's stderr to this file instead of ours."""
    import redis
    from rq import Queue
    from rq import Worker as RQWorker

    conn = redis.Redis.from_url(url)
    q = Queue(queue, connection=conn)
    cmd = [sys.executable, "-m", "workers.cli", "--redis-url", url, "--queue", queue, "--processes", "1",
           "--model", model_dir]
    err = log.open("ab") if log is not None else None
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stderr=err)
    if err is not None:
        err.close()  # the child holds its own descriptor
    try:
        deadline = time.monotonic() + WORKER_START_S
        while RQWorker.count(connection=conn, queue=q) < 1:
            if proc.poll() is not None:
                raise RuntimeError(f"ser-worker exited with {proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError(f"ser-worker did not register within {WORKER_START_S:g} s")
            time.sleep(0.1)
        yield Worker(proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        conn.close()


def write_noise_wav(path: Path, *, seconds: float, rate: int, channels: int = 2, seed: int = 1) -> None:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    data = (0.2 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    sf.write(str(path), data, rate, subtype="PCM_16")


def write_speech_wav(path: Path, *, seconds: float, rate: int, seed: int = 1) -> None:
    """A stereo call of speech-like bursts (:mod:`bench.speechlike`) for bundles with the Silero VAD:
    on each channel, 1.8 s utterances with 0.6 s pauses (about one segment per 2.4 s per channel)."""
    from bench.speechlike import stereo, write_wav

    n = int(seconds * 8000)
    utts = [(c, a, 1.8, seed + 1000 * c + k) for c in (0, 1)
            for k, a in enumerate(range(int((0.3 + 1.2 * c) * 8000), n - 1, int(2.4 * 8000)))]
    write_wav(path, stereo(n / 8000, utts, floor_seed=seed), sr=rate)


def producer_run(url: str, queue: str, model_dir: str, wav: Path, *, batch: int, stream_id: str) -> tuple[int, float]:
    """One real ``ser-produce`` run (in this process): ``(segments, seconds)``, start-up included."""
    import redis

    from producer.pipeline import run
    from producer.settings import ProducerSettings

    settings = ProducerSettings(audio=str(wav), stream_id=stream_id, model_dir=model_dir, redis_url=url,
                                queue=queue, batch=batch, output_format="jsonl", timeout_s=DRAIN_S)
    conn = redis.Redis.from_url(url)
    try:
        outcome = run(settings, stdin=io.BytesIO(), out=io.StringIO(), connection=conn)
    finally:
        conn.close()
    if outcome.error is not None or outcome.results != outcome.expected:
        raise RuntimeError(f"bench producer run incomplete: {outcome.error}")
    return outcome.expected, outcome.seconds


def enqueue_cost_ms(url: str, spec: Any, *, batch: int, segments: int, queue: str) -> tuple[float, float]:
    """``(ms per segment, bytes of RQ job data per job)``: ``RedisBackend.submit`` (PCM encode, claim,
    MULTI/EXEC enqueue) against a queue nobody works, and the size of what RQ stored (zlib'd JSON,
    no PCM). The queue's keys are deleted afterwards."""
    import redis

    from producer.dispatch import Batch, RedisBackend

    conn = redis.Redis.from_url(url)
    window = spec.segment.samples(spec.sample_rate)[0]
    pool = segment_pool(window)
    backend = RedisBackend(spec=spec, stream_id=f"enq-{batch}-{time.time_ns()}", connection=conn, queue=queue,
                           max_pending=10**9, timeout_s=60)
    batches = []
    for first in range(0, segments, batch):
        seqs = range(first, min(first + batch, segments))
        batches.append(Batch("ch0", [(s, 3.0 * s, 3.0 * s + 3) for s in seqs], [pool[s % POOL] for s in seqs]))
    t0 = time.perf_counter()
    for b in batches:
        backend.submit(b)
    seconds = time.perf_counter() - t0
    job_keys = list(conn.scan_iter("rq:job:*", count=1000))
    job_bytes = sum(int(conn.hstrlen(k, "data")) for k in job_keys) / max(len(job_keys), 1)
    for pattern in ("rq:*", "ser:pcm:*", "ser:claim:*"):
        keys = list(conn.scan_iter(pattern, count=1000))
        for i in range(0, len(keys), 500):
            conn.delete(*keys[i:i + 500])
    conn.close()
    return 1000.0 * seconds / segments, job_bytes


@dataclass
class Paced:
    rate: float  # offered segments/s
    segments: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    calls: int
    redis_bytes_per_call: float  # peak used_memory delta during the run / calls


def paced_run(url: str, spec: Any, *, queue: str, batch: int, rate: float, seconds: float,
              calls: int = PACED_CALLS, seed: int = 2) -> Paced:
    """Open-loop load: jobs of ``batch`` segments arrive as a Poisson process of ``rate`` segments/s,
    spread round-robin over ``calls`` streams. Latency of a segment = its result's stream-entry
    time (Redis server clock, ms) minus the job's scheduled arrival (its segments' "end")."""
    import redis

    from producer.dispatch import Batch, RedisBackend
    from workers.contract import decode_entry

    conn = redis.Redis.from_url(url)
    window = spec.segment.samples(spec.sample_rate)[0]
    pool = segment_pool(window)
    tag = time.time_ns()
    backends = [RedisBackend(spec=spec, stream_id=f"paced-{tag}-{i}", connection=conn, queue=queue,
                             max_pending=10**9, timeout_s=60) for i in range(calls)]
    rng = np.random.default_rng(seed)
    n_jobs = max(calls, int(rate * seconds / batch))
    gaps = rng.exponential(batch / rate, n_jobs)
    base_mem = int(conn.info("memory")["used_memory"])
    peak_mem = base_mem
    scheduled: dict[tuple[int, int], float] = {}  # (call, seq) -> wall-clock ms
    next_seq = [0] * calls
    start_wall, start_mono = time.time(), time.monotonic() + 0.05
    t = 0.0
    last_mem = 0.0
    for j in range(n_jobs):
        t += gaps[j]
        delay = start_mono + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        c = j % calls
        seqs = range(next_seq[c], next_seq[c] + batch)
        next_seq[c] += batch
        at_ms = 1000.0 * (start_wall + 0.05 + t)
        for s in seqs:
            scheduled[(c, s)] = at_ms
        backends[c].submit(Batch("ch0", [(s, 3.0 * s, 3.0 * s + 3) for s in seqs], [pool[s % POOL] for s in seqs]))
        if time.monotonic() - last_mem > 0.25:
            peak_mem = max(peak_mem, int(conn.info("memory")["used_memory"]))
            last_mem = time.monotonic()
    deadline = time.monotonic() + DRAIN_S
    while sum(conn.xlen(b.key) for b in backends) < len(scheduled):
        if time.monotonic() > deadline:
            raise RuntimeError("paced run: results missing after the drain timeout")
        time.sleep(0.05)
    peak_mem = max(peak_mem, int(conn.info("memory")["used_memory"]))
    lat = []
    for c, b in enumerate(backends):
        for entry_id, fields in conn.xrange(b.key):
            rec = decode_entry(fields)
            if rec["kind"] != "result":
                raise RuntimeError(f"paced run: {rec}")
            ms = int(entry_id.split(b"-")[0])
            lat.append(ms - scheduled[(c, rec["seq"])])
    conn.close()
    p50, p95, p99 = np.percentile(np.asarray(lat), [50, 95, 99])
    return Paced(rate=rate, segments=len(lat), p50_ms=float(p50), p95_ms=float(p95), p99_ms=float(p99),
                 calls=calls, redis_bytes_per_call=(peak_mem - base_mem) / calls)
