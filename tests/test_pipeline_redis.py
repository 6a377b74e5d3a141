"""The distributed pipeline against a real redis-server: worker pool, ordering, parity with the
embedded mode, backpressure, idempotent re-sends, failure records, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from click.testing import CliRunner
from redis_server import free_port

from models.runtime import EmotionModel
from producer.cli import EXIT_INCOMPLETE
from producer.cli import main as produce_main
from producer.dispatch import Batch, RedisBackend
from workers import job as worker_job
from workers.contract import DEFAULT_QUEUE, PCM_PREFIX, decode_entry, results_key

EXPECTED = [("ch0", 0), ("ch0", 1), ("ch1", 2), ("ch1", 3), ("ch0", 4), ("ch1", 4)]
ROOT = Path(__file__).resolve().parents[1]
QUEUE_KEY = f"rq:queue:{DEFAULT_QUEUE}"


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.pop("SER_REDIS_URL", None)
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    return out


def producer_proc(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "producer.cli", *args, "--redis-url", url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)


def worker_proc(url: str, bundle: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "workers.cli", "--redis-url", url, "--model", str(bundle), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)


def embedded(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(produce_main, args, env={"SER_REDIS_URL": ""})
    return result.exit_code, result.stdout, result.stderr


def records(text: str) -> list[dict]:
    """The segment records of a jsonl output (turn records: tests/test_turns.py)."""
    return [r for r in map(json.loads, filter(str.strip, text.splitlines())) if r["kind"] != "turn"]


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def metric_sum(text: str, name: str, label: str) -> float:
    """Sum of the samples of ``name`` whose labels contain ``label``, from a /metrics page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def stream_kinds(client: redis.Redis, stream_id: str) -> list[str]:
    return [decode_entry(fields)["kind"] for _, fields in client.xrange(results_key(stream_id))]


def work_in_process(url: str, model: object) -> None:
    """Drain the queue with a non-forking RQ worker in this process (burst)."""
    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer

    conn = redis.Redis.from_url(url)
    worker_job.set_model(model)  # type: ignore[arg-type]
    try:
        queue = Queue(DEFAULT_QUEUE, connection=conn, serializer=JSONSerializer)
        SimpleWorker([queue], connection=conn, serializer=JSONSerializer).work(burst=True, logging_level="ERROR")
    finally:
        worker_job.set_model(None)
        conn.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def test_two_process_pool_matches_embedded_and_resend_is_idempotent(
        redis_url: str, client: redis.Redis, stereo_call: Path, tiny_bundle_dir: Path) -> None:
    args = [str(stereo_call), "--model", str(tiny_bundle_dir), "--format", "jsonl", "--stream-id", "call1",
            "--batch", "2", "--timeout", "30"]
    prod = producer_proc(redis_url, *args)
    wait_for(lambda: client.llen(QUEUE_KEY) >= 4)  # everything is queued, nothing worked yet
    assert client.llen(QUEUE_KEY) == 4  # ch0: seq 0-1, 4; ch1: seq 2-3, 4
    time.sleep(0.3)
    assert "end" not in stream_kinds(client, "call1")  # the end waits for the call's last record
    worker = worker_proc(redis_url, tiny_bundle_dir, "--processes", "2", "--burst")
    _, werr = worker.communicate(timeout=60)
    assert worker.returncode == 0, werr
    out, err = prod.communicate(timeout=30)
    assert prod.returncode == 0, err
    distributed = records(out)
    assert [(r["channel"], r["seq"]) for r in distributed] == EXPECTED
    kinds = stream_kinds(client, "call1")  # a consumer may stop at the end record: it is the last
    assert kinds[-1] == "end" and kinds.count("end") == 1 and kinds.count("result") == 6 and "turn" in kinds
    assert [(r["start_s"], r["end_s"]) for r in distributed] == [(3.0 * s, 3.0 * s + 3) for _, s in EXPECTED]
    code, emb_out, emb_err = embedded(args)
    assert code == 0, emb_err
    assert records(emb_out) == distributed
    # the PCM keys were consumed; the results stream expires
    assert not client.keys(PCM_PREFIX + "*")
    assert 0 < client.ttl(results_key("call1")) <= 3600
    # a re-send of the same call enqueues nothing and prints each record once
    n_results = stream_kinds(client, "call1").count("result")
    result = CliRunner().invoke(produce_main, [*args, "--redis-url", redis_url])
    assert result.exit_code == 0, result.stderr
    assert records(result.stdout) == distributed
    assert "already sent" in result.stderr
    assert client.llen(QUEUE_KEY) == 0 and stream_kinds(client, "call1").count("result") == n_results


def test_backpressure_keeps_the_queue_under_the_limit_and_sigterm_is_clean(
        redis_url: str, client: redis.Redis, tmp_path: Path, tiny_bundle_dir: Path) -> None:
    from conftest import synth_call

    call = synth_call(tmp_path / "call.wav")  # 6 voiced segments -> 6 jobs of one segment
    prod = producer_proc(redis_url, str(call), "--model", str(tiny_bundle_dir), "--batch", "1",
                         "--max-pending", "2", "--format", "jsonl", "--timeout", "30")
    seen: list[int] = []
    wait_for(lambda: seen.append(int(client.llen(QUEUE_KEY))) or seen[-1] >= 2)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        seen.append(int(client.llen(QUEUE_KEY)))
        time.sleep(0.005)
    assert max(seen) == 2 and prod.poll() is None  # blocked at the limit, not failed
    port = free_port()
    worker = worker_proc(redis_url, tiny_bundle_dir, "--processes", "1", "--metrics-port", str(port))
    try:
        while prod.poll() is None:
            seen.append(int(client.llen(QUEUE_KEY)))
            time.sleep(0.005)
        out, err = prod.communicate()
        assert prod.returncode == 0, err
        assert max(seen) <= 2
        assert len(records(out)) == 6
        # the pool's /metrics sums its processes and exports the producer's counters
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert metric_sum(text, "ser_segments_total", 'status="ok"') == 6
        assert metric_sum(text, "ser_end_to_end_seconds_count", "") == 6
        assert metric_sum(text, "ser_stage_seconds_count", 'stage="inference"') == 6  # one batch per job
        assert metric_sum(text, "ser_producer_segments_total", 'outcome="enqueued"') == 6
        assert metric_sum(text, "ser_producer_segments_total", 'outcome="skipped_silence"') == 6
        assert metric_sum(text, "ser_producer_backpressure_wait_seconds_total", "") > 0.5
    finally:
        worker.send_signal(signal.SIGTERM)
        _, werr = worker.communicate(timeout=30)
    assert worker.returncode == 0, werr
    assert "Traceback" not in werr


def test_same_batch_sent_twice_is_classified_once(redis_url: str, client: redis.Redis, tiny_bundle_dir: Path) -> None:
    conn = client
    model = EmotionModel(tiny_bundle_dir)
    backend = RedisBackend(spec=model.spec, stream_id="dup", connection=conn, queue=DEFAULT_QUEUE, max_pending=10,
                           timeout_s=5)
    rng = np.random.default_rng(3)
    segs = [(0.3 * rng.standard_normal(24000)).astype(np.float32) for _ in range(2)]
    batch = Batch("ch0", [(0, 0.0, 3.0), (1, 3.0, 6.0)], segs)
    backend.submit(batch)
    backend.submit(batch)
    assert conn.llen(QUEUE_KEY) == 1 and backend.jobs == 1 and backend.resent == 2  # segments
    work_in_process(redis_url, model)
    got = [r for r in backend.poll() if r["kind"] == "result"]
    assert [(r["channel"], r["seq"]) for r in got] == [("ch0", 0), ("ch0", 1)]


class OtherModel:
    """The tiny model under another name@version (a worker running a different bundle)."""

    def __init__(self, model: EmotionModel) -> None:
        self._model, self.labels, self.model_id = model, model.labels, "other-model@2.0"
        self.features, self.predict_features = model.features, model.predict_features


def test_timeout_then_model_mismatch_failures_give_a_failed_run(
        redis_url: str, stereo_call: Path, tiny_bundle_dir: Path) -> None:
    args = [str(stereo_call), "--model", str(tiny_bundle_dir), "--stream-id", "mismatch", "--redis-url", redis_url,
            "--format", "jsonl", "--batch", "16"]
    # no worker: the run enqueues everything, then gives up with a one-line reason
    first = CliRunner().invoke(produce_main, [*args, "--timeout", "0.5"])
    assert first.exit_code == EXIT_INCOMPLETE
    assert first.stderr.strip().splitlines()[-1].startswith("Error: timed out after 0.5 s")
    # a worker with another model answers every segment with a failure record
    work_in_process(redis_url, OtherModel(EmotionModel(tiny_bundle_dir)))
    second = CliRunner().invoke(produce_main, [*args, "--timeout", "10"])
    assert second.exit_code == EXIT_INCOMPLETE
    failures = records(second.stdout)
    assert [(r["channel"], r["seq"]) for r in failures] == EXPECTED
    assert all(r["kind"] == "failure" and "model mismatch" in r["error"] for r in failures)
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: 6 of 6 segment(s) failed") and "other-model@2.0" in last


def test_all_silent_call_needs_no_worker(redis_url: str, client: redis.Redis, tmp_path: Path,
                                         tiny_bundle_dir: Path) -> None:
    from conftest import synth_call

    call = synth_call(tmp_path / "quiet.wav", silent=True)
    result = CliRunner().invoke(produce_main, [str(call), "--model", str(tiny_bundle_dir), "--redis-url", redis_url,
                                               "--stream-id", "quiet", "--format", "jsonl", "--timeout", "5"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and "the call is silent" in result.stderr
    assert client.llen(QUEUE_KEY) == 0 and stream_kinds(client, "quiet") == ["end"]


def test_worker_rejects_a_bad_bundle_in_one_line(redis_url: str, tmp_path: Path) -> None:
    proc = worker_proc(redis_url, tmp_path, "--burst")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err.strip().count("\n") == 0 and err.startswith("Error:") and "spec.json" in err
