"""workers.metrics: several processes summed through the multiprocess dir, HTTP endpoints, and a
real Prometheus scraping a running ``ser-worker --metrics-port`` pool on a real redis-server (skipped
where the ``prometheus`` binary is absent; a failure under ``SER_REQUIRE_SYSTEM_DEPS=1``, as in CI)."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sysdeps
from prometheus_client.parser import text_string_to_metric_families
from redis_server import free_port

from producer.metrics import DYNAMICS_FIELDS, PRODUCER_METRICS_KEY, ProducerMetrics
from workers import exporter
from workers import metrics as wm

SEGMENTS_PER_CHILD = 3
MODEL_INFO = {"name": "tiny", "version": "1.2.3", "labels": wm.DEFAULT_LABELS}


def _child(go_away: Any, index: int) -> None:
    """One worker process: records a known set of values, then waits to be told to exit."""
    m = wm.WorkerMetrics()
    m.ready()
    for _ in range(SEGMENTS_PER_CHILD):
        with m.stage("inference"):
            pass
        m.segment("ok", "angry")
        m.e2e(0.5)
        m.busy(0.25)
    m.segment("error")
    m.error("Inference Failed!" if index else "inference_failed")
    go_away.wait(30)


class FakeRedis:
    """The four calls the collector makes, over an RQ-shaped queue."""

    def __init__(self, jobs: dict[str, datetime] | None = None, up: bool = True) -> None:
        self.jobs = jobs or {}
        self.up = up
        self.hashes: dict[str, float] = {}

    def _check(self) -> None:
        if not self.up:
            raise ConnectionError("redis down")

    def ping(self) -> bool:
        self._check()
        return True

    def llen(self, key: str) -> int:
        self._check()
        assert key == "rq:queue:ser"
        return len(self.jobs)

    def lindex(self, key: str, index: int) -> bytes | None:
        self._check()
        ids = list(self.jobs)
        return ids[index].encode() if ids else None

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        self._check()
        assert key == wm.PRODUCER_METRICS_KEY
        return {k.encode(): str(v).encode() for k, v in self.hashes.items()}

    def pipeline(self, transaction: bool = True) -> FakeRedis:
        return self

    def hincrby(self, key: str, field: str, amount: int) -> None:
        self.hashes[field] = int(self.hashes.get(field, 0)) + amount

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        self.hashes[field] = float(self.hashes.get(field, 0)) + amount

    def execute(self) -> None:
        self._check()

    def hget(self, key: str, field: str) -> bytes | None:
        self._check()
        assert field == "enqueued_at"
        when = self.jobs.get(key.removeprefix("rq:job:"))
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode() if when else None


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def mp_dir() -> Iterator[Path]:
    with wm.multiprocess_dir() as path:
        yield path


def test_two_processes_are_summed_and_dead_ones_dropped(mp_dir: Path) -> None:
    ctx = mp.get_context("spawn")
    go_away = ctx.Event()
    redis = FakeRedis({"j1": datetime.now(UTC) - timedelta(seconds=42), "j2": datetime.now(UTC)})
    pm = ProducerMetrics(redis)
    pm.enqueued(5)
    pm.skipped_silence(2, 6.0)
    pm.call_done(ok=True)
    pm.dynamics({"channels": {"a": {"talk_s": 10.0, "interruptions": 2}, "b": {"talk_s": 5.5, "interruptions": 1}},
                 "non_talk_s": 4.0, "silence": {"count": 1, "total_s": 3.5}, "overtalk": {"count": 3, "total_s": 1.5}})
    server = exporter.start_metrics_server(0, host="127.0.0.1", redis=redis, queue="ser", model_info=MODEL_INFO)
    children = [ctx.Process(target=_child, args=(go_away, i)) for i in range(2)]
    try:
        assert _get(server.url + "/healthz")[0] == 200
        assert _get(server.url + "/readyz")[0] == 503  # no worker has loaded its model yet
        for c in children:
            c.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            code, text = _get(server.url + "/metrics")
            s = _samples(text)
            if s.get(("ser_errors_total", (("reason", "inference_failed"),))) == 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"children's values never showed up:\n{text}")
        assert code == 200
        # Every family the module declares is exposed, and nothing else under ser_.
        exposed = {m.group(1) for m in re.finditer(r"^# TYPE (ser_\w+) ", text, re.M)}
        assert exposed == set(wm.METRIC_FAMILIES)
        assert s[("ser_segments_total", (("label", "angry"), ("status", "ok")))] == 2 * SEGMENTS_PER_CHILD
        assert s[("ser_segments_total", (("label", "none"), ("status", "error")))] == 2
        assert s[("ser_stage_seconds_count", (("stage", "inference"),))] == 2 * SEGMENTS_PER_CHILD
        assert s[("ser_stage_seconds_count", (("stage", "decode"),))] == 0
        assert s[("ser_end_to_end_seconds_bucket", (("le", "0.5"),))] == 2 * SEGMENTS_PER_CHILD
        assert s[("ser_worker_busy_seconds_total", ())] == pytest.approx(2 * SEGMENTS_PER_CHILD * 0.25)
        assert s[("ser_workers", ())] == 2
        assert s[("ser_workers_ready", ())] == 2
        assert s[("ser_queue_depth", ())] == 2
        assert 41 < s[("ser_queue_oldest_job_age_seconds", ())] < 60
        assert s[("ser_redis_up", ())] == 1
        assert s[("ser_producer_segments_total", (("outcome", "enqueued"),))] == 5
        assert s[("ser_producer_segments_total", (("outcome", "skipped_silence"),))] == 2
        assert s[("ser_producer_silence_seconds_total", ())] == 6.0
        assert s[("ser_producer_calls_total", (("status", "ok"),))] == 1
        dyn = {name: s[(f"ser_producer_{name}_total", ())] for name in wm.DYNAMICS_HELP}
        assert dyn == {"talk_seconds": 15.5, "non_talk_seconds": 4.0, "silences": 1, "silence_long_seconds": 3.5,
                       "overtalks": 3, "overtalk_seconds": 1.5, "interruptions": 3}
        assert s[("ser_producer_calls_total", (("status", "error"),))] == 0
        assert s[("ser_model_info", (("labels", ",".join(wm.DEFAULT_LABELS)), ("name", "tiny"),
                                     ("version", "1.2.3")))] == 1
        assert _get(server.url + "/readyz") == (200, "2 worker(s) with a loaded model\n")

        go_away.set()
        for c in children:
            c.join(30)
            assert c.exitcode == 0
            wm.mark_process_dead(c.pid)  # type: ignore[arg-type]
        s = _samples(_get(server.url + "/metrics")[1])
        assert s.get(("ser_workers", ()), 0) == 0  # live gauges go with their process ...
        assert s[("ser_segments_total", (("label", "angry"), ("status", "ok")))] == 6  # ... counts stay
        assert _get(server.url + "/readyz")[0] == 503
        redis.up = False
        s = _samples(_get(server.url + "/metrics")[1])
        assert s[("ser_redis_up", ())] == 0 and ("ser_queue_depth", ()) not in s
        assert _get(server.url + "/readyz") == (503, "redis unreachable\n")
    finally:
        go_away.set()
        for c in children:
            if c.is_alive():
                c.kill()
        server.close()


def test_readiness_callback_and_flag_flip() -> None:
    state = {"ready": False}
    server = exporter.start_metrics_server(0, host="127.0.0.1", ready=lambda: state["ready"])
    try:
        assert _get(server.url + "/readyz")[0] == 503
        state["ready"] = True
        assert _get(server.url + "/readyz")[0] == 200
        assert _get(server.url + "/nope")[0] == 404
    finally:
        server.close()
    server = exporter.start_metrics_server(0, host="127.0.0.1", redis=FakeRedis())
    try:
        server.set_ready(True)
        assert _get(server.url + "/readyz")[0] == 200
        server.set_ready(False)
        assert _get(server.url + "/readyz")[0] == 503
    finally:
        server.close()


def test_api_rejects_unbounded_labels() -> None:
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    m = wm.WorkerMetrics(registry=reg)
    with pytest.raises(ValueError):
        m.segment("weird", "angry")
    with pytest.raises(ValueError), m.stage("resample"):
        pass
    m.segment("ok", "not-a-label")
    m.error("Redis: connection refused (call 12)")
    assert reg.get_sample_value("ser_segments_total", {"status": "ok", "label": "other"}) == 1
    assert reg.get_sample_value("ser_errors_total", {"reason": "redis_connection_refused_call_12"}) == 1
    enq = datetime(2026, 1, 1, 12, 0, 0)  # naive UTC, as RQ stores it
    assert m.e2e_since(enq, now=enq.replace(tzinfo=UTC) + timedelta(seconds=2.5)) == pytest.approx(2.5)
    assert reg.get_sample_value("ser_end_to_end_seconds_bucket", {"le": "3.0"}) == 1


def test_real_prometheus_scrapes_a_running_pool(tmp_path: Path, redis_url: str, tiny_bundle_dir: Path) -> None:
    """A real Prometheus scrapes a real ``ser-worker --processes 2 --metrics-port P`` pool (own
    redis-server) after ``ser-produce`` has sent it a call: it sees the pool's segments, workers,
    model, queue and the producer's counters."""
    binary = sysdeps.binary("prometheus", hint="bash .ci/install-system-deps.sh installs Debian's prometheus")
    import signal

    from conftest import synth_call
    from test_pipeline_redis import producer_proc, records, worker_proc

    from models.bundle import load_bundle

    spec = load_bundle(tiny_bundle_dir).spec
    port = free_port()
    worker = worker_proc(redis_url, tiny_bundle_dir, "--processes", "2", "--metrics-port", str(port))
    proc: subprocess.Popen[bytes] | None = None
    seen: dict[str, float] = {}
    err = b""
    queries = {  # PromQL -> the value it must reach
        'sum(ser_segments_total{status="ok"})': 6.0,  # synth_call: 6 voiced segments
        "ser_workers": 2.0,
        f'ser_model_info{{name="{spec.name}",version="{spec.version}"}}': 1.0,
        'ser_producer_segments_total{outcome="enqueued"}': 6.0,
        "ser_queue_depth": 0.0,
        'up{job="ser-worker"}': 1.0,
    }
    try:
        prod = producer_proc(redis_url, str(synth_call(tmp_path / "call.wav")), "--model", str(tiny_bundle_dir),
                             "--format", "jsonl", "--timeout", "60")
        out, perr = prod.communicate(timeout=120)
        assert prod.returncode == 0, perr
        assert len(records(out)) == 6
        prom_port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: ser-worker\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        )
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and seen != queries:
            time.sleep(0.5)
            for query in queries:
                try:
                    code, body = _get(f"http://127.0.0.1:{prom_port}/api/v1/query?"
                                      + urllib.parse.urlencode({"query": query}))
                except (urllib.error.URLError, ConnectionError):
                    break  # not listening yet
                result = json.loads(body)["data"]["result"] if code == 200 else []
                if len(result) == 1:
                    seen[query] = float(result[0]["value"][1])
    finally:
        if proc is not None:
            proc.terminate()
            try:
                _, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
        worker.send_signal(signal.SIGTERM)
        _, werr = worker.communicate(timeout=30)
    assert seen == queries, f"prometheus saw {seen}; its log:\n{err.decode()[-3000:]}"
    assert worker.returncode == 0 and "Traceback" not in werr, werr


def test_producer_metrics_key_agrees_and_never_fails(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The producer adds to the hash the pool's exporter reads (a real Redis); with Redis down it
    never raises and logs the failure once per producer, not once per call."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    assert PRODUCER_METRICS_KEY == wm.PRODUCER_METRICS_KEY
    assert DYNAMICS_FIELDS == tuple(wm.DYNAMICS_HELP)
    up = redis.Redis.from_url(redis_url)
    ProducerMetrics(up).enqueued(3)
    ProducerMetrics(up).enqueued(2)
    assert up.hgetall(wm.PRODUCER_METRICS_KEY) == {b"segments:enqueued": b"5"}
    down = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    caplog.set_level(logging.WARNING, logger="producer.metrics")
    pm = ProducerMetrics(down)
    pm.enqueued(3)
    pm.backpressure_wait(1.5)
    pm.call_done(ok=True)
    warnings = [r for r in caplog.records if r.name == "producer.metrics"]
    assert len(warnings) == 1 and "producer metrics not recorded" in warnings[0].getMessage()
    ProducerMetrics(None).enqueued(1)  # embedded: records nothing, needs no Redis
    assert up.hgetall(wm.PRODUCER_METRICS_KEY) == {b"segments:enqueued": b"5"}


def test_cleanup_restores_in_memory_values() -> None:
    from prometheus_client import values

    with wm.multiprocess_dir():
        wm.WorkerMetrics()
        assert values.ValueClass is not values.MutexValue
    assert values.ValueClass is values.MutexValue  # later metrics in this process do not write to a removed dir


def test_metrics_server_binds_loopback_by_default_and_prints_the_address_it_bound() -> None:
    from click.testing import CliRunner

    from workers.cli import main as worker_main

    server = exporter.start_metrics_server(0)
    try:
        assert server.host == "127.0.0.1"  # the address the socket is bound to
        assert server.url == f"http://127.0.0.1:{server.port}"
    finally:
        server.close()
    server = exporter.start_metrics_server(0, host="0.0.0.0")
    try:
        assert server.url == f"http://0.0.0.0:{server.port}"  # not a loopback address it did not bind
        assert _get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200
    finally:
        server.close()
    help_text = CliRunner().invoke(worker_main, ["--help"]).output
    assert "--metrics-host" in help_text and "127.0.0.1" in help_text
