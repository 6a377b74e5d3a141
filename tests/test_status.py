"""ser-status against a real redis-server: queue depth and age, workers with their model, failed jobs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
from click.testing import CliRunner
from rq import Queue
from rq.serializers import JSONSerializer
from test_pipeline_redis import ROOT, env, wait_for

from workers.cli import status
from workers.contract import DEFAULT_QUEUE
from workers.status import ADVERTISE_PREFIX


def snapshot(url: str) -> dict:
    result = CliRunner().invoke(status, ["--redis-url", url, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_status_shows_queue_workers_models_and_failures(redis_url: str, tiny_bundle_dir: Path) -> None:
    conn = redis.Redis.from_url(redis_url)
    try:
        q = Queue(DEFAULT_QUEUE, connection=conn, serializer=JSONSerializer)
        q.enqueue("workers.job.no_such_function", {"v": 1}, job_id="bogus-1")
        time.sleep(0.2)
        before = snapshot(redis_url)
        assert before["queue"]["depth"] == 1 and before["queue"]["oldest_age_s"] >= 0.1
        assert before["workers"] == [] and before["queue"]["failed"] == 0

        pool = subprocess.Popen([sys.executable, "-m", "workers.cli", "--redis-url", redis_url, "--model",
                                 str(tiny_bundle_dir), "--processes", "2"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
        try:
            wait_for(lambda: len([w for w in snapshot(redis_url)["workers"] if w["model"]]) == 2, timeout=60)
            wait_for(lambda: snapshot(redis_url)["queue"]["failed"] == 1)
            now = snapshot(redis_url)
            assert now["models"] == {"tiny-test@0.0.1": 2}
            assert now["queue"]["depth"] == 0
            assert now["failed_jobs"][0]["id"] == "bogus-1" and now["failed_jobs"][0]["reason"]
            text = CliRunner().invoke(status, ["--redis-url", redis_url]).stdout
            assert "workers: 2 (tiny-test@0.0.1 x2)" in text and "failed bogus-1" in text
        finally:
            pool.send_signal(signal.SIGTERM)
            _, err = pool.communicate(timeout=30)
        assert pool.returncode == 0, err
        assert not conn.keys(ADVERTISE_PREFIX + "*")  # retired workers leave no advertisement
    finally:
        conn.close()


def test_status_unreachable_redis_is_one_line() -> None:
    result = CliRunner().invoke(status, ["--redis-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot read the pool from Redis") and "Traceback" not in result.output


def test_dead_and_silent_workers_are_not_idle_and_do_not_count_as_a_model(redis_url: str) -> None:
    import socket

    from workers.process import make_worker
    from workers.status import advertise

    conn = redis.Redis.from_url(redis_url)
    gone_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()  # a pid that no longer runs
    workers = {name: make_worker(conn, DEFAULT_QUEUE, name=name) for name in ("live", "killed", "silent")}
    for w in workers.values():
        w.register_birth()
        w.set_state("idle")
    retire = advertise(conn, name="live", model_id="tiny-test@0.0.1")
    conn.set(ADVERTISE_PREFIX + "killed", json.dumps({"name": "killed", "model": "tiny-test@0.0.1",
                                                      "host": socket.gethostname(), "pid": int(gone_pid)}))
    conn.hset("rq:worker:silent", "hostname", "another-host")  # killed elsewhere: its advertisement expired
    try:
        wait_for(lambda: conn.exists(ADVERTISE_PREFIX + "live") == 1)
        snap = snapshot(redis_url)
        states = {w["name"]: w["state"] for w in snap["workers"]}
        assert states == {"live": "idle", "killed": "dead", "silent": "stale"}
        assert snap["models"] == {"tiny-test@0.0.1": 1}
        text = CliRunner().invoke(status, ["--redis-url", redis_url]).stdout
        assert "workers: 1 (tiny-test@0.0.1 x1); 2 gone" in text, text
        assert "warning" not in text and "unknown x" not in text, text
    finally:
        retire()
        for w in workers.values():
            w.register_death()
        conn.close()


def test_status_reads_the_url_from_a_file(redis_url: str, tmp_path: Path) -> None:
    url_file = tmp_path / "redis.url"
    url_file.write_text(redis_url + "\n")
    result = CliRunner().invoke(status, ["--redis-url-file", str(url_file), "--json"],
                                env={"SER_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["queue"]["name"] == DEFAULT_QUEUE
    missing = CliRunner().invoke(status, ["--redis-url-file", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and missing.output.startswith("Error: cannot read --redis-url-file")
