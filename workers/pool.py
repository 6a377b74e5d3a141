"""A pool of N non-forking worker processes started with multiprocessing 'spawn'.

The parent forwards SIGTERM/SIGINT to every child as one SIGTERM (RQ's warm shutdown: finish
the current job, then exit) and waits for all of them. If a child fails, the others are stopped.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from typing import Any

from workers.process import pool_child
from workers.settings import WorkerSettings

#: Seconds between liveness checks of the children.
JOIN_POLL_S = 0.2


def start_metrics(settings: WorkerSettings) -> tuple[Any, Any]:
    """Start the /metrics server (all children summed) before any child; see workers.exporter."""
    import redis

    from models.bundle import load_bundle
    from workers import exporter, metrics

    mp_dir = metrics.setup_multiprocess_dir()  # exported: the spawned children inherit it
    spec = load_bundle(settings.model_dir).spec
    connection = redis.Redis.from_url(settings.redis_url)
    server = exporter.start_metrics_server(int(settings.metrics_port or 0), redis=connection, queue=settings.queue,
                                           model_info=spec, host=settings.metrics_host)
    print(f"ser-worker: metrics at {server.url}/metrics", file=sys.stderr)  # the address really bound
    return server, mp_dir


def run_pool(settings: WorkerSettings) -> int:
    """Run ``settings.processes`` workers; return the worst child exit code (0 when all were clean)."""
    server = mp_dir = None
    if settings.metrics_port is not None:
        server, mp_dir = start_metrics(settings)
    ctx = multiprocessing.get_context("spawn")
    parent = os.getpid()
    procs = [ctx.Process(target=pool_child, args=(settings, i, parent), name=f"ser-worker-{i}")
             for i in range(settings.processes)]

    requested: list[int] = []  # signals received: a child they killed before its handlers were up is clean

    def stop_children() -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    def on_signal(signum: int, frame: Any) -> None:
        requested.append(signum)
        stop_children()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for p in procs:
            p.start()
        stopping = False
        dead: set[int] = set()
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(JOIN_POLL_S)
                if p.exitcode is not None and p.pid is not None and p.pid not in dead and mp_dir is not None:
                    from workers.metrics import mark_process_dead

                    mark_process_dead(p.pid)
                    dead.add(p.pid)
                if not stopping and p.exitcode not in (None, 0) and not (requested and p.exitcode == -signal.SIGTERM):
                    print(f"ser-worker: {p.name} exited with code {p.exitcode}; stopping the pool",
                          file=sys.stderr)
                    stopping = True
                    stop_children()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if server is not None and mp_dir is not None:
            from workers.metrics import cleanup_multiprocess_dir

            server.close()
            server.collector.redis.close()
            cleanup_multiprocess_dir(mp_dir)
    codes = [0 if requested and p.exitcode == -signal.SIGTERM else abs(p.exitcode or 0) for p in procs]
    return max(codes, default=0)
