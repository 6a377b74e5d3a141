"""A Redis at ``maxmemory`` with ``noeviction`` (as deploy/k8s/redis.yaml runs it): workers wait and
serve on once memory frees, producers keep their records and fail in one line without payload bytes
(docs/pipeline.md, "Redis memory")."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from redis_server import RedisServer
from test_faults import EXPECTED, ROOT, a_batch, env, stream_records, wait_for

from models.runtime import EmotionModel
from producer.dispatch import RedisBackend
from workers.contract import DEFAULT_QUEUE

QUEUE_KEY = f"rq:queue:{DEFAULT_QUEUE}"


def fill(admin: redis.Redis) -> None:
    """Make Redis full: every write that needs memory is refused from now on."""
    admin.config_set("maxmemory", 1)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        admin.set("probe", b"1")


def start_pool(url: str, bundle: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen([sys.executable, "-m", "workers.cli", "--model", str(bundle), "--processes", "1"],
                                stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env={**env(), "SER_REDIS_URL": url})


def stop_pool(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@pytest.fixture(scope="module")
def model(tiny_bundle_dir: Path) -> EmotionModel:
    return EmotionModel(tiny_bundle_dir)


def test_pool_started_while_redis_is_full_waits_then_drains_the_backlog(tmp_path: Path, tiny_bundle_dir: Path,
                                                                         model: EmotionModel) -> None:
    log = tmp_path / "pool.log"
    with RedisServer(tmp_path, "--maxmemory-policy", "noeviction") as server:
        admin = redis.Redis.from_url(server.url())
        backend = RedisBackend(spec=model.spec, stream_id="full", connection=admin, queue=DEFAULT_QUEUE,
                               max_pending=8, timeout_s=30, resend_after_s=0)
        backend.submit(a_batch("ch0", 0))
        backend.submit(a_batch("ch1", 0, seed=4))
        fill(admin)  # a backlog that only workers can drain, and no room to register a worker
        workers = start_pool(server.url(), tiny_bundle_dir, log)
        try:
            wait_for(lambda: "out of memory" in log.read_text() or workers.poll() is not None, timeout=60)
            time.sleep(1.5)  # a few back-off rounds
            assert workers.poll() is None, log.read_text()  # it waits; it does not exit
            assert admin.llen(QUEUE_KEY) == 2
            admin.config_set("maxmemory", 0)  # room again
            got: list[dict] = []
            deadline = time.monotonic() + 30
            while len([r for r in got if r["kind"] == "result"]) < 4:
                assert time.monotonic() < deadline, log.read_text()
                got += backend.poll(0.2)
            assert workers.poll() is None
        finally:
            code = stop_pool(workers)
            admin.close()
    err = log.read_text()
    assert code == 0, err
    assert err.count("out of memory") == 1 and "Traceback" not in err and "quitting" not in err, err
    assert "accepts writes again" in err


def test_full_redis_mid_call_keeps_records_one_line_no_payload_and_the_pool_serves_on(
        tmp_path: Path, tiny_bundle_dir: Path) -> None:
    import soundfile as sf
    from conftest import synth_call

    y, sr = sf.read(synth_call(tmp_path / "call.wav"), dtype="int16")
    raw = y.tobytes()
    split = int(7.5 * sr) * 4  # ch0 seq 0 and 1 are complete before Redis fills up
    log = tmp_path / "pool.log"
    with RedisServer(tmp_path, "--maxmemory-policy", "noeviction") as server:
        admin = redis.Redis.from_url(server.url())
        workers = start_pool(server.url(), tiny_bundle_dir, log)
        try:
            wait_for(lambda: admin.scard("rq:workers") >= 1, timeout=60)
            prod = subprocess.Popen([sys.executable, "-m", "producer.cli", "-", "--rate", str(sr), "--channels", "2",
                                     "--model", str(tiny_bundle_dir), "--format", "jsonl", "--stream-id", "fills",
                                     "--timeout", "3"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                                    env={**env(), "SER_REDIS_URL": server.url()})
            assert prod.stdin is not None
            prod.stdin.write(raw[:split])
            prod.stdin.flush()
            wait_for(lambda: len(stream_records(admin, "fills")) >= 2, timeout=60)
            fill(admin)
            out_b, err_b = prod.communicate(input=raw[split:], timeout=60)
            assert workers.poll() is None, log.read_text()
            admin.config_set("maxmemory", 0)
            again = subprocess.run([sys.executable, "-m", "producer.cli", str(tmp_path / "call.wav"), "--model",
                                    str(tiny_bundle_dir), "--format", "jsonl", "--timeout", "30"],
                                   capture_output=True, text=True, cwd=ROOT,
                                   env={**env(), "SER_REDIS_URL": server.url()}, timeout=120)
        finally:
            code = stop_pool(workers)
            admin.close()
    out, err = out_b.decode(), err_b.decode("utf-8", "replace")
    assert prod.returncode == 3, err
    recs = [json.loads(line) for line in out.splitlines()]
    assert [(r["channel"], r["seq"]) for r in recs][:2] == [("ch0", 0), ("ch0", 1)]  # what it had, printed
    errors = [line for line in err.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "out of memory" in errors[0], err
    assert "ser:pcm" not in err and "Traceback" not in err and "\ufffd" not in err
    assert again.returncode == 0, again.stderr  # the same pool serves the next call
    assert [(r["channel"], r["seq"]) for r in map(json.loads, again.stdout.splitlines()) if r["kind"] != "turn"] \
        == EXPECTED
    assert code == 0 and "Traceback" not in log.read_text(), log.read_text()


def test_a_refused_pipeline_command_is_one_line_without_its_arguments(tmp_path: Path) -> None:
    from producer.cli import redis_reason

    pcm = bytes(range(256)) * 64
    with RedisServer(tmp_path, "--maxmemory-policy", "noeviction") as server:
        admin = redis.Redis.from_url(server.url())
        fill(admin)
        pipe = admin.pipeline()
        pipe.set("ser:pcm:x", pcm)
        with pytest.raises(redis.ResponseError) as info:
            pipe.execute()
        admin.close()
    assert "ser:pcm:x" in str(info.value)  # redis-py names the command and its arguments
    line = redis_reason(info.value)
    assert "ser:pcm" not in line and "\n" not in line and line.isprintable() and "maxmemory" in line, line
