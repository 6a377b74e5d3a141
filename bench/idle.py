"""First-job latency after an idle spell: a worker that has waited longer than redis-py's default
socket timeout (5 s) must still take the next job at once (docs/benchmark.md, issue 15 item 2)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

#: Seconds a worker idles before each measured job (longer than redis-py 8's 5 s socket timeout plus
#: RQ's first reconnect back-off, so a connection that times out idle dequeues shows).
IDLE_S = 12.0
#: Worker log lines that betray a cut idle dequeue.
SPURIOUS = ("could not connect", "Timeout reading")


def first_job_after_idle_ms(url: str, spec: Any, *, queue: str, idle_s: float = IDLE_S) -> float:
    """Idle ``idle_s``, then send one one-segment job; ms from the send to its record."""
    import redis

    from bench.load import segment_pool
    from producer.dispatch import Batch, RedisBackend

    conn = redis.Redis.from_url(url)
    window = spec.segment.samples(spec.sample_rate)[0]
    backend = RedisBackend(spec=spec, stream_id=f"idle-{time.time_ns()}", connection=conn, queue=queue,
                           max_pending=8, timeout_s=60, resend_after_s=0)
    time.sleep(idle_s)
    t0 = time.perf_counter()
    backend.submit(Batch("ch0", [(0, 0.0, 3.0)], [segment_pool(window)[0]]))
    deadline = time.monotonic() + 60
    while not any(r["kind"] == "result" for r in backend.poll(0.5)):
        if time.monotonic() > deadline:
            raise RuntimeError("idle run: no result within 60 s")
    ms = 1000.0 * (time.perf_counter() - t0)
    conn.close()
    return ms


def spurious_lines(log: Path) -> int:
    """Lines of a worker log that report a cut idle dequeue."""
    if not log.exists():
        return 0
    return sum(any(s in line for s in SPURIOUS) for line in log.read_text(errors="replace").splitlines())
