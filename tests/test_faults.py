"""Faults against real redis-servers the tests control: a worker killed mid-job, Redis restarted
mid-call, re-sends without duplicates, malformed jobs written by someone else. Nothing lost,
nothing let in (docs/pipeline.md, "Delivery guarantees"; docs/security.md)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from redis_server import RedisServer

from models.runtime import EmotionModel
from producer.collector import Collector
from producer.dispatch import Batch, RedisBackend
from workers import job as worker_job
from workers.contract import DEFAULT_QUEUE, JOB_FUNC, PCM_PREFIX, results_key
from workers.process import make_worker
from workers.safety import MAX_JOB_DATA_BYTES, REJECTED_KEY, SafeJob

ROOT = Path(__file__).resolve().parents[1]
QUEUE_KEY = f"rq:queue:{DEFAULT_QUEUE}"
EXPECTED = [("ch0", 0), ("ch0", 1), ("ch1", 2), ("ch1", 3), ("ch0", 4), ("ch1", 4)]


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.pop("SER_REDIS_URL", None)
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    return out


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def drain(url: str, model: object) -> None:
    """Work the queue empty in this process with the pool's own worker class (burst)."""
    conn = redis.Redis.from_url(url)
    worker_job.set_model(model)  # type: ignore[arg-type]
    try:
        make_worker(conn, DEFAULT_QUEUE).work(burst=True, logging_level="ERROR")
    finally:
        worker_job.set_model(None)
        conn.close()


def stream_records(conn: redis.Redis, stream_id: str) -> list[dict]:
    return [json.loads(f[b"record"]) for _, f in conn.xrange(results_key(stream_id))]


def a_batch(channel: str = "ch0", first: int = 0, k: int = 2, seed: int = 3) -> Batch:
    rng = np.random.default_rng(seed)
    segs = [(0.3 * rng.standard_normal(24000)).astype(np.float32) for _ in range(k)]
    return Batch(channel, [(first + i, 3.0 * (first + i), 3.0 * (first + i) + 3) for i in range(k)], segs)


@pytest.fixture(scope="module")
def model(tiny_bundle_dir: Path) -> EmotionModel:
    return EmotionModel(tiny_bundle_dir)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


# --- at-least-once without duplicates -------------------------------------------------------------
def test_overdue_batch_is_resent_and_the_duplicate_never_shows(redis_url: str, model: EmotionModel) -> None:
    conn = redis.Redis.from_url(redis_url)
    backend = RedisBackend(spec=model.spec, stream_id="dup", connection=conn, queue=DEFAULT_QUEUE, max_pending=8,
                           timeout_s=5, resend_after_s=0.01)
    backend.submit(a_batch())
    time.sleep(0.02)
    backend._checked = 0.0  # (checks run at most every 0.5 s)
    backend.poll()
    assert backend.retried == 0  # still queued: a re-send would not help
    conn.hset("rq:job:dup-ch0-0", "status", "started")  # as if a worker took it and died
    time.sleep(0.02)
    backend._checked = 0.0
    backend.check()
    assert backend.retried == 1 and conn.llen(QUEUE_KEY) == 2 and conn.exists(PCM_PREFIX + "dup-ch0-0-r1")
    drain(redis_url, model)  # both attempts run: at-least-once
    got = backend.poll()
    assert [(r["channel"], r["seq"]) for r in got if r["kind"] == "result"] == [("ch0", 0), ("ch0", 1)] * 2
    assert not backend.pending  # acknowledged: its PCM is no longer held
    collector = Collector()
    for key in [("ch0", 0), ("ch0", 1)]:
        collector.expect(*key)
    for rec in got:
        collector.add(rec)
    assert [(r["channel"], r["seq"]) for r in collector.pop_ready()] == [("ch0", 0), ("ch0", 1)]
    assert collector.duplicates == 2 and collector.outstanding == 0
    conn.close()


# --- Redis restarted without persistence -----------------------------------------------------------
def test_producer_reconnects_and_resends_what_a_restart_lost(own_server: RedisServer, model: EmotionModel) -> None:
    conn = redis.Redis.from_url(own_server.url())
    backend = RedisBackend(spec=model.spec, stream_id="rs", connection=conn, queue=DEFAULT_QUEUE, max_pending=8,
                           timeout_s=20, resend_after_s=0)
    backend.submit(a_batch("ch0", 0))
    backend.submit(a_batch("ch1", 0, seed=4))
    backend.finish({"kind": "end", "stream_id": "rs", "segments": 4})
    own_server.restart()  # queue, PCM keys, claims and the stream are gone
    assert conn.dbsize() == 0
    backend._checked = 0.0  # (checks run at most every 0.5 s)
    backend.poll()  # redis-py reconnects by itself; the missing epoch key tells the producer what happened
    assert backend.restarts == 1 and backend.retried == 2
    assert conn.llen(QUEUE_KEY) == 2 and len(conn.keys(PCM_PREFIX + "*")) == 2
    drain(own_server.url(), model)
    got = [r for r in backend.poll() if r["kind"] == "result"]
    assert sorted((r["channel"], r["seq"]) for r in got) == [("ch0", 0), ("ch0", 1), ("ch1", 0), ("ch1", 1)]
    assert not backend.pending
    assert [r["kind"] for r in stream_records(conn, "rs")].count("end") == 1  # the end record was re-published
    conn.close()


def test_producer_gives_up_in_one_line_when_redis_stays_away(own_server: RedisServer, model: EmotionModel) -> None:
    from producer.dispatch import StalledError

    conn = redis.Redis.from_url(own_server.url())
    backend = RedisBackend(spec=model.spec, stream_id="gone", connection=conn, queue=DEFAULT_QUEUE, max_pending=8,
                           timeout_s=1.0)
    own_server.stop()
    started = time.monotonic()
    with pytest.raises(StalledError, match="Redis unreachable for 1 s"):
        backend.submit(a_batch())
    assert time.monotonic() - started < 5
    conn.close()


# --- malformed jobs from someone else ----------------------------------------------------------------
def test_malformed_jobs_are_refused_recorded_and_the_worker_keeps_serving(
        redis_url: str, model: EmotionModel, tmp_path: Path) -> None:
    from rq import Queue
    from rq.serializers import JSONSerializer

    conn = redis.Redis.from_url(redis_url)
    queue = Queue(DEFAULT_QUEUE, connection=conn, serializer=JSONSerializer)
    marker = tmp_path / "pwned"
    # 1. raw bytes in the queue: no such job
    conn.rpush(QUEUE_KEY, b"\x00\xff raw bytes")
    # 2. a pickled payload (a worker that unpickled it would run os.system)

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    conn.hset("rq:job:pickled", mapping={"data": zlib.compress(pickle.dumps((JOB_FUNC, None, (Evil(),), {}))),
                                         "origin": DEFAULT_QUEUE, "status": "queued"})
    conn.rpush(QUEUE_KEY, "pickled")
    # 3. a JSON job calling another function, 4. one naming another failure callback
    queue.enqueue_call("os.system", args=(f"touch {marker}",), job_id="other-func")
    from rq import Callback

    queue.enqueue_call(JOB_FUNC, args=({},), job_id="other-callback", on_failure=Callback("os.getcwd"))
    # 5. an oversized payload, 6. our function with keys outside ser:
    queue.enqueue_call(JOB_FUNC, args=({"pad": os.urandom(MAX_JOB_DATA_BYTES).hex()},), job_id="oversized")
    queue.enqueue_call(JOB_FUNC, args=({"stream_id": "x", "channel": "c", "model_id": "m", "pcm_key": "secret",
                                        "results_key": "ser:results:x", "window": 1, "sample_rate": 8000,
                                        "items": [[0, 0.0, 3.0]]},), job_id="bad-keys")
    # ... and then a good batch
    backend = RedisBackend(spec=model.spec, stream_id="good", connection=conn, queue=DEFAULT_QUEUE, max_pending=64,
                           timeout_s=5)
    backend.submit(a_batch())
    drain(redis_url, model)
    assert [r["kind"] for r in backend.poll()] == ["result", "result"]  # the worker kept serving
    assert not marker.exists()
    rejected = {f[b"job_id"].decode(): f[b"reason"].decode() for _, f in conn.xrange(REJECTED_KEY)}
    assert set(rejected) == {"<not UTF-8>", "pickled", "other-callback", "oversized"}
    assert "not a JSON job" in rejected["pickled"] and "os.getcwd" in rejected["other-callback"]
    assert "limit" in rejected["oversized"]
    failed = {m.decode() for m in conn.zrange(f"rq:failed:{DEFAULT_QUEUE}", 0, -1)}
    assert {"pickled", "other-callback", "oversized", "other-func", "bad-keys"} <= failed
    # RQ's own maintenance skips a refused job (e.g. planted in the started registry) instead of quitting
    conn.zadd(f"rq:wip:{DEFAULT_QUEUE}", {"pickled:0123456789abcdef": 1})
    from rq.registry import StartedJobRegistry

    StartedJobRegistry(DEFAULT_QUEUE, connection=conn, job_class=SafeJob, serializer=JSONSerializer).cleanup()
    other = SafeJob.fetch("other-func", connection=conn, serializer=JSONSerializer)
    reason = other.latest_result().exc_string or ""
    assert "PermissionError" in reason and "os.system" in reason
    bad = SafeJob.fetch("bad-keys", connection=conn, serializer=JSONSerializer)
    assert "must start with" in (bad.latest_result().exc_string or "")
    conn.close()


def test_jobs_cross_redis_as_json_never_pickle(redis_url: str, model: EmotionModel) -> None:
    conn = redis.Redis.from_url(redis_url)
    backend = RedisBackend(spec=model.spec, stream_id="js", connection=conn, queue=DEFAULT_QUEUE, max_pending=8,
                           timeout_s=5)
    backend.submit(a_batch())
    data = json.loads(zlib.decompress(conn.hget("rq:job:js-ch0-0", "data")))
    assert data[0] == JOB_FUNC and data[2][0]["pcm_key"] == PCM_PREFIX + "js-ch0-0"
    assert backend.queue.serializer.__name__ == "JSONSerializer" if hasattr(backend.queue.serializer, "__name__") \
        else "JSON" in type(backend.queue.serializer).__name__
    for path in [*ROOT.glob("producer/*.py"), *ROOT.glob("workers/*.py")]:
        text = path.read_text()
        assert "import pickle" not in text and "DefaultSerializer" not in text, path
    conn.close()


# --- a worker killed with SIGKILL in the middle of a job --------------------------------------------
SLOW_WORKER = """
import sys, time, redis
from models.runtime import EmotionModel
from workers import job
from workers.process import make_worker
m = EmotionModel(sys.argv[2])
class Slow:
    labels, model_id = m.labels, m.model_id
    def features(self, x):
        print("busy", flush=True)
        time.sleep(600)
job.set_model(Slow())
make_worker(redis.Redis.from_url(sys.argv[1]), "ser").work(logging_level="ERROR")
"""


def test_segment_of_a_worker_killed_mid_job_still_gets_a_result(
        redis_url: str, stereo_call: Path, tiny_bundle_dir: Path, model: EmotionModel) -> None:
    conn = redis.Redis.from_url(redis_url)
    slow = subprocess.Popen([sys.executable, "-c", SLOW_WORKER, redis_url, str(tiny_bundle_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    prod = subprocess.Popen([sys.executable, "-m", "producer.cli", str(stereo_call), "--model", str(tiny_bundle_dir),
                             "--redis-url", redis_url, "--format", "jsonl", "--stream-id", "killed", "--batch", "16",
                             "--timeout", "30", "--resend-after", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    try:
        assert slow.stdout is not None and slow.stdout.readline().strip() == "busy"  # PCM taken, job running
        slow.send_signal(signal.SIGKILL)
        slow.communicate(timeout=10)
        while prod.poll() is None:  # a healthy worker serves what is queued, the re-send included
            drain(redis_url, model)
            time.sleep(0.2)
        out, err = prod.communicate()
    finally:
        for p in (slow, prod):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert prod.returncode == 0, err
    recs = [r for r in map(json.loads, out.splitlines()) if r["kind"] != "turn"]
    assert [(r["channel"], r["seq"]) for r in recs] == EXPECTED and all(r["kind"] == "result" for r in recs)
    assert "1 re-sent" in err
    conn.close()


# --- the whole pipeline across a Redis restart ---------------------------------------------------
def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def pool(url: str, bundle: Path, *args: str, **extra_env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "workers.cli", "--model", str(bundle), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**env(), "SER_REDIS_URL": url, **extra_env})


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def test_call_survives_a_redis_restart_with_a_running_pool(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    import soundfile as sf
    from conftest import synth_call

    y, sr = sf.read(synth_call(tmp_path / "call.wav"), dtype="int16")
    raw = y.tobytes()
    split = int(7.5 * sr) * 4  # ch0 seq 0 and 1 are complete before the restart
    with RedisServer(tmp_path) as server:
        admin = redis.Redis.from_url(server.url())
        workers = pool(server.url(), tiny_bundle_dir, "--processes", "1")
        prod = subprocess.Popen([sys.executable, "-m", "producer.cli", "-", "--rate", str(sr), "--channels", "2",
                                 "--model", str(tiny_bundle_dir), "--format", "jsonl", "--stream-id", "restart",
                                 "--timeout", "40", "--resend-after", "5"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                                env={**env(), "SER_REDIS_URL": server.url()})
        try:
            assert prod.stdin is not None
            prod.stdin.write(raw[:split])
            prod.stdin.flush()
            wait_for(lambda: len(stream_records(admin, "restart")) >= 2, timeout=60)
            server.restart()  # no persistence: queue, PCM, claims and results are gone
            out_b, err_b = prod.communicate(input=raw[split:], timeout=90)
            out, err = out_b.decode(), err_b.decode()
            assert workers.poll() is None  # the pool lived through it
        finally:
            if prod.poll() is None:
                prod.kill()
                prod.wait()
            for pipe in (prod.stdin, prod.stdout, prod.stderr):
                if pipe is not None and not pipe.closed:
                    pipe.close()
            _, werr = stop(workers)
        admin.close()
    assert prod.returncode == 0, err
    recs = [r for r in map(json.loads, out.splitlines()) if r["kind"] != "turn"]
    assert [(r["channel"], r["seq"]) for r in recs] == EXPECTED and all(r["kind"] == "result" for r in recs)
    assert "reconnect" in err.splitlines()[-1], err  # it noticed, and re-sent what was pending
    assert workers.returncode == 0 and "Traceback" not in werr, werr


# --- AUTH, ACL users, no password in argv or logs -----------------------------------------------------
def test_wrong_password_is_one_line_without_the_password(tmp_path: Path, stereo_call: Path,
                                                         tiny_bundle_dir: Path) -> None:
    from click.testing import CliRunner

    from producer.cli import main as produce_main

    with RedisServer(tmp_path, "--requirepass", "right-secret-1", password="right-secret-1") as server:
        result = CliRunner().invoke(produce_main, [str(stereo_call), "--model", str(tiny_bundle_dir)],
                                    env={"SER_REDIS_URL": server.url(password="wrong-secret-2")})
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot reach Redis at redis://:***@127.0.0.1"), lines
    assert "secret" not in result.stderr


def test_documented_acls_run_the_pipeline_and_no_password_leaks(tmp_path: Path, stereo_call: Path,
                                                                  tiny_bundle_dir: Path) -> None:
    import secrets

    admin_pw = "admin-" + secrets.token_hex(8)
    import shlex

    rules = [shlex.split(line) for line in (ROOT / "docs" / "security.md").read_text().splitlines()
             if line.startswith("ACL SETUSER ")]
    assert [r[2] for r in rules] == ["ser-producer", "ser-worker"]
    with RedisServer(tmp_path, "--requirepass", admin_pw, password=admin_pw) as server:
        admin = redis.Redis.from_url(server.url())
        pw = {}
        for rule in rules:
            pw[rule[2]] = f"{rule[2]}-" + secrets.token_hex(12)
            admin.execute_command("ACL", "SETUSER", rule[2], *[p.replace("CHANGE-ME", pw[rule[2]]) for p in rule[3:]])
        url_file = tmp_path / "producer.url"
        url_file.write_text(server.url("ser-producer", pw["ser-producer"]) + "\n")
        url_file.chmod(0o600)
        workers = pool(server.url("ser-worker", pw["ser-worker"]), tiny_bundle_dir, "--processes", "2",
                       "--metrics-port", "0", SER_LOG_LEVEL="INFO")
        try:
            wait_for(lambda: admin.scard("rq:workers") >= 2, timeout=60)
            procs = [workers.pid, *children(workers.pid)]
            assert len(procs) >= 3  # the parent and two spawned children
            for pid in procs:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                assert not any(p.encode() in cmdline for p in (*pw.values(), admin_pw)), cmdline
            prod = subprocess.run([sys.executable, "-m", "producer.cli", str(stereo_call), "--model",
                                   str(tiny_bundle_dir), "--format", "jsonl", "--redis-url-file", str(url_file),
                                   "--timeout", "30", "--batch", "2"],
                                  capture_output=True, text=True, cwd=ROOT, env=env(), timeout=120)
        finally:
            wout, werr = stop(workers)
        denied = admin.execute_command("ACL", "LOG")
        admin.close()
    assert prod.returncode == 0, prod.stderr
    assert [(r["channel"], r["seq"]) for r in map(json.loads, prod.stdout.splitlines()) if r["kind"] != "turn"] \
        == EXPECTED
    assert denied == [], denied  # the documented rules are enough, for both sides
    assert workers.returncode == 0, werr
    for text in (prod.stdout, prod.stderr, wout, werr):
        assert not any(p in text for p in (*pw.values(), admin_pw))


def test_tls_url_with_a_password_runs_a_call(tmp_path: Path, stereo_call: Path, tiny_bundle_dir: Path,
                                             model: EmotionModel) -> None:
    with RedisServer(tmp_path, "--requirepass", "tls-secret-3", password="tls-secret-3", tls=True) as server:
        url = server.url()
        assert url.startswith("rediss://")
        # the server has no plain-text port ("--port 0"): only TLS, checked against the test CA
        prod = subprocess.Popen([sys.executable, "-m", "producer.cli", str(stereo_call), "--model",
                                 str(tiny_bundle_dir), "--format", "jsonl", "--timeout", "30"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                env={**env(), "SER_REDIS_URL": url})
        try:
            while prod.poll() is None:
                drain(url, model)
                time.sleep(0.2)
            out, err = prod.communicate()
        finally:
            if prod.poll() is None:
                prod.kill()
                prod.communicate()
    assert prod.returncode == 0, err
    assert [(r["channel"], r["seq"]) for r in map(json.loads, out.splitlines()) if r["kind"] != "turn"] == EXPECTED
    assert "tls-secret" not in err


RESTARTING_WORKER = """
import os, sys, time
from models import runtime
features = runtime.EmotionModel.features
def slow(self, x):
    if os.path.exists(sys.argv[3]):
        time.sleep(2)  # Redis goes away meanwhile
    return features(self, x)
runtime.EmotionModel.features = slow
from workers.process import run_worker
from workers.settings import WorkerSettings
run_worker(WorkerSettings(redis_url=sys.argv[1], model_dir=sys.argv[2], log_level="ERROR"), name="rw")
"""


def test_worker_loop_survives_redis_going_away_mid_job(tmp_path: Path, tiny_bundle_dir: Path,
                                                       model: EmotionModel) -> None:
    flag = tmp_path / "slow"
    flag.touch()
    with RedisServer(tmp_path) as server:
        conn = redis.Redis.from_url(server.url())
        worker = subprocess.Popen([sys.executable, "-c", RESTARTING_WORKER, server.url(), str(tiny_bundle_dir),
                                   str(flag)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                  env=env())
        try:
            wait_for(lambda: conn.scard("rq:workers") >= 1, timeout=60)
            backend = RedisBackend(spec=model.spec, stream_id="away", connection=conn, queue=DEFAULT_QUEUE,
                                   max_pending=8, timeout_s=30, resend_after_s=0)
            backend.submit(a_batch())
            wait_for(lambda: conn.hget("rq:job:away-ch0-0", "status") == b"started")
            server.stop()  # longer than redis-py's own retries: RQ's work loop quits mid-job
            time.sleep(3)
            flag.unlink()
            server.start()
            got: list[dict] = []
            deadline = time.monotonic() + 40
            while len({r["seq"] for r in got if r["kind"] == "result"}) < 2:
                assert time.monotonic() < deadline, "no result after the restart"
                backend._checked = 0.0
                got += backend.poll(0.2)  # notices the lost epoch, re-sends the batch
            assert worker.poll() is None  # the same process serves on, under a fresh RQ worker
            assert any(name.endswith(b"rw-r1") for name in conn.smembers("rq:workers"))
            # ser-status finds the model of the fresh RQ worker: the advertisement follows its name
            wait_for(lambda: conn.exists("ser:worker:rw-r1") == 1, timeout=10)
        finally:
            stop(worker)
            conn.close()


def test_rq_logs_a_lost_redis_connection_in_one_line() -> None:
    import logging

    import redis as redis_lib

    from workers.process import OneLineRedisErrors

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            import sys

            return logging.LogRecord("rq.worker", logging.ERROR, __file__, 1, "Worker %s: found an unhandled "
                                     "exception, quitting...", ("w",), sys.exc_info())

    lost = record(redis_lib.ConnectionError("Connection reset by peer"))
    assert OneLineRedisErrors().filter(lost) and lost.exc_info is None
    text = logging.Formatter().format(lost)
    assert "Traceback" not in text and "ConnectionError: Connection reset by peer" in text
    other = record(ValueError("bad"))
    assert OneLineRedisErrors().filter(other) and "Traceback" in logging.Formatter().format(other)


def test_lean_worker_keeps_its_key_alive_with_fewer_round_trips(redis_url: str, tiny_bundle_dir: Path) -> None:
    """The pool's worker skips heartbeats that would not extend its key's life, but never lets the key
    expire sooner than RQ asked (minus the slack); suspension is still honoured; jobs still run."""
    from rq.exceptions import StopRequested
    from rq.suspension import resume, suspend

    from workers.process import HEARTBEAT_SLACK_S, SUSPEND_CHECK_S

    conn = redis.Redis.from_url(redis_url)
    try:
        worker = make_worker(conn, DEFAULT_QUEUE, name="lean")
        worker.register_birth()
        with conn.pipeline() as pipe:  # as RQ does while a job starts: a short TTL in a pipeline
            worker.heartbeat(180, pipeline=pipe)
            pipe.execute()
        assert 170 <= conn.ttl(worker.key) <= 180
        worker.heartbeat()  # RQ's default (worker_ttl + 60 = 480 s) extends the key: sent
        assert conn.ttl(worker.key) > 470
        beat = conn.hget(worker.key, "last_heartbeat")
        conn.config_resetstat()
        for _ in range(5):
            worker.heartbeat()  # would not extend the key by more than the slack: skipped
        assert "cmdstat_expire" not in conn.info("commandstats")
        assert conn.hget(worker.key, "last_heartbeat") == beat and conn.ttl(worker.key) > 480 - HEARTBEAT_SLACK_S - 5

        worker.set_state("idle")
        conn.hset(worker.key, "state", "other")
        worker.set_state("idle")  # already written by this worker: not written again
        assert conn.hget(worker.key, "state") == b"other"
        worker.set_state("busy")
        assert conn.hget(worker.key, "state") == b"busy"

        suspend(conn)
        with pytest.raises(StopRequested):
            worker.check_for_suspension(burst=True)  # noticed at once the first time
        resume(conn)
        worker.check_for_suspension(burst=True)
        suspend(conn)
        worker.check_for_suspension(burst=True)  # within SUSPEND_CHECK_S: not checked again yet
        time.sleep(SUSPEND_CHECK_S + 0.1)
        with pytest.raises(StopRequested):
            worker.check_for_suspension(burst=True)
        resume(conn)
        worker.register_death()

        model = EmotionModel(tiny_bundle_dir)
        backend = RedisBackend(spec=model.spec, stream_id="lean", connection=conn, queue=DEFAULT_QUEUE,
                               max_pending=100, timeout_s=10)
        window = model.spec.segment.samples(model.spec.sample_rate)[0]
        rng = np.random.default_rng(0)
        for seq in range(6):
            backend.submit(Batch("ch0", [(seq, 3.0 * seq, 3.0 * seq + 3)],
                                 [(0.1 * rng.standard_normal(window)).astype(np.float32)]))
        assert backend.queue_seen == 6  # the length came back with the last enqueue
        drain(redis_url, model)
        records = backend.poll()
        assert sorted(r["seq"] for r in records if r["kind"] == "result") == list(range(6))
        assert not backend.pending
    finally:
        resume(conn)
        conn.close()
