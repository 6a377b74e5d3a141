"""A hung Redis (SIGSTOP: the socket stays open, nothing answers) is bounded by ``--timeout``: the
producer's client has explicit socket timeouts (redis-py < 8 has none by default; 8's 5 s default
made a hung Redis cost two of them on top of ``--timeout``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from redis_server import RedisServer
from test_faults import ROOT, env

from producer.cli import connect
from producer.settings import SOCKET_TIMEOUT_MAX_S, SOCKET_TIMEOUT_MIN_S

#: Seconds a ``--timeout 1`` run may take to give up on a stopped Redis: one socket timeout for the
#: command that hung (the backend's, or a call-event write's that met it first: --timeout counts from
#: then), one for the reconnect's PING, and start-up/exit slack. Once Redis is known down the call's
#: events and metrics skip it (callevents.writer.RedisLink), ``call_ended`` included.
BOUND_S = 1 + 2 * SOCKET_TIMEOUT_MIN_S + 3.5


def test_producer_client_has_explicit_socket_timeouts() -> None:
    for timeout_s, want in ((0.5, SOCKET_TIMEOUT_MIN_S), (3.0, 3.0), (60.0, SOCKET_TIMEOUT_MAX_S)):
        kwargs = connect("redis://127.0.0.1:1/0", timeout_s=timeout_s).connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == want and kwargs["socket_connect_timeout"] == want


def test_stopped_redis_mid_call_ends_within_the_timeout_in_one_line(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    import soundfile as sf
    from conftest import synth_call

    y, sr = sf.read(synth_call(tmp_path / "call.wav"), dtype="int16")
    raw = y.tobytes()
    split = int(7.5 * sr) * 4
    with RedisServer(tmp_path) as server:
        assert server.proc is not None
        prod = subprocess.Popen([sys.executable, "-m", "producer.cli", "-", "--rate", str(sr), "--channels", "2",
                                 "--model", str(tiny_bundle_dir), "--format", "jsonl", "--stream-id", "hung",
                                 "--timeout", "1"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                                env={**env(), "SER_REDIS_URL": server.url()})
        try:
            assert prod.stdin is not None
            prod.stdin.write(raw[:split])
            prod.stdin.flush()
            time.sleep(3)  # model loaded, first jobs enqueued (no worker: they stay queued)
            os.kill(server.proc.pid, signal.SIGSTOP)
            t0 = time.monotonic()
            _, err_b = prod.communicate(input=raw[split:], timeout=60)
            elapsed = time.monotonic() - t0
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
            if prod.poll() is None:
                prod.kill()
                prod.communicate()
    err = err_b.decode()
    assert prod.returncode == 3, err
    errors = [line for line in err.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Redis unreachable for 1 s" in errors[0] and "Traceback" not in err, err
    assert elapsed < BOUND_S, f"gave up after {elapsed:.1f} s (bound {BOUND_S:g} s)"


def test_a_lost_link_is_shared_by_the_calls_writers(tmp_path: Path) -> None:
    """The first timeout of any writer marks the link down; then events (``end`` too) and metrics skip
    Redis without a socket timeout each, until the backend hears from it again."""
    import redis

    from callevents.writer import CallEvents, RedisLink
    from producer.metrics import ProducerMetrics

    with RedisServer(tmp_path) as server:
        assert server.proc is not None
        conn = redis.Redis.from_url(server.url(), socket_timeout=0.5, socket_connect_timeout=0.5)
        link = RedisLink()
        calls = CallEvents(conn, call_id="c", source="file", channels=["ch0"], link=link)
        calls.start()
        assert not link.down and conn.exists("ser:call:c") == 1
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            calls.publish([{"kind": "dynamics", "talk_s": 1.0}])  # meets the hung server: one timeout
            assert link.down and link.down_since is not None and link.down_since >= t0
            t1 = time.monotonic()
            ProducerMetrics(conn, link=link).call_done()
            calls.end(reason="incomplete", duration_s=1.0, summary={})
            assert time.monotonic() - t1 < 0.25 and calls.dropped == 2  # dynamics, then call_ended: not tried
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        link.answered()
        ProducerMetrics(conn, link=link).call_done()
        assert conn.hget("ser:metrics:producer", "calls:ok") == b"1"
