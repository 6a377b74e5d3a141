"""Measure worker throughput (segments/s) for several batch sizes against a running Redis.

    python examples/bench_throughput.py --redis-url redis://localhost:6379/0 --model DIR \
        --segments 1200 --processes 1 --batch 1 --batch 8 --batch 16 --batch 32

For each batch size it enqueues ``--segments`` voiced random segments (as the producer would:
JSON jobs, PCM in its own key), then runs ``ser-worker --burst`` and reports the rate between the
first and the last result in the stream (Redis stream ids are millisecond timestamps), so process
start-up and model warm-up are not counted. It uses the queue named by ``--queue``: do not point
it at a production queue.
"""

from __future__ import annotations

import subprocess
import sys
import time

import click
import numpy as np
import redis

from models.bundle import load_bundle
from producer.dispatch import Batch, RedisBackend
from workers.contract import results_key


@click.command()
@click.option("--redis-url", required=True)
@click.option("--model", "model_dir", default=None)
@click.option("--queue", default="ser-bench")
@click.option("--segments", default=1200, show_default=True)
@click.option("--processes", default=1, show_default=True)
@click.option("--batch", "batches", multiple=True, type=int, default=(1, 8, 16, 32), show_default=True)
def main(redis_url: str, model_dir: str | None, queue: str, segments: int, processes: int,
         batches: tuple[int, ...]) -> None:
    conn = redis.Redis.from_url(redis_url)
    spec = load_bundle(model_dir).spec
    window = spec.segment.samples(spec.sample_rate)[0]
    rng = np.random.default_rng(0)
    pool = [(0.2 * rng.standard_normal(window)).astype(np.float32) for _ in range(64)]
    for size in batches:
        stream_id = f"bench-{size}-{time.time_ns()}"
        backend = RedisBackend(spec=spec, stream_id=stream_id, connection=conn, queue=queue,
                               max_pending=10**9, timeout_s=60)
        t0 = time.perf_counter()
        for first in range(0, segments, size):
            seqs = range(first, min(first + size, segments))
            backend.submit(Batch("ch0", [(s, 3.0 * s, 3.0 * s + 3) for s in seqs], [pool[s % 64] for s in seqs]))
        enqueue_s = time.perf_counter() - t0
        cmd = [sys.executable, "-m", "workers.cli", "--redis-url", redis_url, "--queue", queue,
               "--processes", str(processes), "--burst"] + (["--model", model_dir] if model_dir else [])
        subprocess.run(cmd, check=True)
        entries = conn.xrange(results_key(stream_id))
        results = [e for e in entries if e[1][b"kind"] == b"result"]
        first_ms = int(results[0][0].split(b"-")[0])
        last_ms = int(results[-1][0].split(b"-")[0])
        rate = (len(results) - size) / max((last_ms - first_ms) / 1000, 1e-3)  # first batch's time is not seen
        click.echo(f"batch {size:3d}: {len(results)} results, {rate:7.0f} segments/s with {processes} process(es); "
                   f"enqueue {segments / enqueue_s:7.0f} segments/s")
        conn.delete(results_key(stream_id))


if __name__ == "__main__":
    main()
