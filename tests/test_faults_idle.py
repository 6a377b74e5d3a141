"""An idle worker keeps its blocking dequeue: no socket timeout cuts it (redis-py 8 defaults to 5 s,
RQ blocks up to 405 s), so no spurious reconnect lines and no back-off for the next job to wait out.
First-job latency after idle is measured by ``python -m bench`` (bench/idle.py)."""

from __future__ import annotations

import time
from pathlib import Path

import redis
from redis_server import RedisServer
from test_faults import a_batch, wait_for
from test_faults_oom import start_pool, stop_pool

from models.runtime import EmotionModel
from producer.dispatch import RedisBackend
from workers.contract import DEFAULT_QUEUE
from workers.process import WORKER_SOCKET_TIMEOUT_S, connect, make_worker

#: redis-py 8's default socket timeout: an idle worker must outlive it without a word.
REDIS_PY_DEFAULT_TIMEOUT_S = 5.0


def test_worker_connection_outlasts_rqs_blocking_dequeue(redis_url: str) -> None:
    conn = connect(redis_url)
    conn.ping()  # the connection the worker pings first is the one it then blocks on
    worker = make_worker(conn, DEFAULT_QUEUE, name="idle-unit")
    pooled = conn.connection_pool.get_connection()
    try:
        assert pooled.socket_timeout is not None and pooled.socket_timeout >= worker.connection_timeout
        assert WORKER_SOCKET_TIMEOUT_S > worker.dequeue_timeout
    finally:
        conn.connection_pool.release(pooled)
        conn.close()


def test_idle_pool_logs_nothing_and_takes_the_next_job(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    log = tmp_path / "pool.log"
    with RedisServer(tmp_path) as server:
        admin = redis.Redis.from_url(server.url())
        workers = start_pool(server.url(), tiny_bundle_dir, log)
        try:
            wait_for(lambda: admin.scard("rq:workers") >= 1, timeout=60)
            time.sleep(REDIS_PY_DEFAULT_TIMEOUT_S + 2.5)  # idle, past redis-py's default socket timeout
            assert "could not connect" not in log.read_text() and "Timeout" not in log.read_text(), log.read_text()
            backend = RedisBackend(spec=EmotionModel(tiny_bundle_dir).spec, stream_id="idle", connection=admin,
                                   queue=DEFAULT_QUEUE, max_pending=8, timeout_s=30, resend_after_s=0)
            backend.submit(a_batch())
            got: list[dict] = []
            deadline = time.monotonic() + 30
            while len(got) < 2:
                assert time.monotonic() < deadline
                got += backend.poll(0.2)
        finally:
            code = stop_pool(workers)
            admin.close()
    assert code == 0 and log.read_text() == "", log.read_text()


def test_idle_pool_stops_within_seconds_of_sigterm(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    """RQ 3 + redis-py >= 8.2: RQ's command-channel thread waits in get_message(timeout=60) and RQ's
    teardown joined it; a pool then took 60 s to stop (workers.process.make_worker.unsubscribe)."""
    import signal

    log = tmp_path / "pool.log"
    with RedisServer(tmp_path) as server:
        admin = redis.Redis.from_url(server.url())
        workers = start_pool(server.url(), tiny_bundle_dir, log)
        try:
            wait_for(lambda: admin.scard("rq:workers") >= 1, timeout=60)
            time.sleep(1.0)  # subscribed to its command channel, waiting for a job
            t0 = time.monotonic()
            workers.send_signal(signal.SIGTERM)
            code = workers.wait(timeout=30)
            took = time.monotonic() - t0
        finally:
            stop_pool(workers)
            admin.close()
    assert code == 0 and took < 5.0, (took, log.read_text())
