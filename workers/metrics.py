"""Prometheus metrics and health endpoints for the worker pool, correct with several processes.

How the pool wires it in (``ser-worker --processes N --metrics-port P``)::

    # pool parent, BEFORE any child process starts
    mp_dir = setup_multiprocess_dir()          # temp dir, exported as PROMETHEUS_MULTIPROC_DIR
    server = start_metrics_server(P, redis=conn, queue="ser", model_info=spec)
    ...start the spawn children (they inherit the environment)...
    # when a child exits (normally or not)
    mark_process_dead(child.pid)
    # on shutdown
    server.close(); cleanup_multiprocess_dir(mp_dir)

    # in each child, once per process, after the model is loaded
    metrics = WorkerMetrics(labels=spec.labels)
    metrics.ready()
    # per job
    with metrics.stage("decode"): ...
    with metrics.stage("features"): ...
    with metrics.stage("inference"): ...
    with metrics.stage("publish"): ...
    metrics.segment("ok", label)              # or metrics.segment("error"); metrics.error("inference")
    metrics.e2e_since(job.enqueued_at)        # enqueue -> publish
    metrics.busy(seconds_spent_on_the_job)    # or: with metrics.busy_timer(): ...

Children write their values to mmap files in ``PROMETHEUS_MULTIPROC_DIR``; the parent serves the
sum through :class:`prometheus_client.multiprocess.MultiProcessCollector`, plus the gauges that
only make sense from one place (queue depth and oldest job age read from Redis on each scrape,
model info, Redis reachability) through :class:`SerCollector`.

Busy ratio (fraction of worker wall time spent on jobs)::

    sum(rate(ser_worker_busy_seconds_total[5m])) / sum(ser_workers)

Label cardinality is bounded: ``status`` is one of :data:`STATUSES`, ``label`` one of the model's
labels (or ``none``/``other``), ``stage`` one of :data:`STAGES`, ``reason`` a short identifier.
Nothing is labelled per call or per stream.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client import multiprocess as prom_mp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from workers.settings import DEFAULT_METRICS_HOST

log = logging.getLogger(__name__)

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
STAGES = ("decode", "features", "inference", "publish")
STATUSES = ("ok", "error", "skipped")
DEFAULT_LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The latency objective in deploy/prometheus/alerts.yml uses the 5.0 bucket: keep it here.
E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

# Every metric family this module exposes, name -> Prometheus type. Dashboards and alert rules are
# checked against this (tests/test_deploy.py).
METRIC_FAMILIES: dict[str, str] = {
    "ser_segments_total": "counter",
    "ser_stage_seconds": "histogram",
    "ser_end_to_end_seconds": "histogram",
    "ser_errors_total": "counter",
    "ser_worker_busy_seconds_total": "counter",
    "ser_workers": "gauge",
    "ser_workers_ready": "gauge",
    "ser_queue_depth": "gauge",
    "ser_queue_oldest_job_age_seconds": "gauge",
    "ser_redis_up": "gauge",
    "ser_model_info": "info",
    "ser_producer_segments_total": "counter",
    "ser_producer_silence_seconds_total": "counter",
    "ser_producer_backpressure_wait_seconds_total": "counter",
    "ser_producer_calls_total": "counter",
}

#: Redis hash the producers add their counters to (producer.metrics.PRODUCER_METRICS_KEY; the
#: workers may not import the producer, tests/test_metrics.py checks the two agree).
PRODUCER_METRICS_KEY = "ser:metrics:producer"

_SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "info": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
}


def sample_names() -> set[str]:
    """Every series name a query may use (``ser_stage_seconds_bucket`` ...), for checks."""
    names: set[str] = set()
    for family, kind in METRIC_FAMILIES.items():
        names.update(family + s for s in _SUFFIXES[kind])
        if kind == "histogram":
            names.add(family)
    return names


# --------------------------------------------------------------------------- multiprocess dir


def setup_multiprocess_dir(path: str | Path | None = None) -> Path:
    """Create (or empty) the directory the worker processes write their values to and export it.

    Call in the pool parent before any child starts: spawned children inherit the environment
    and import prometheus_client with ``PROMETHEUS_MULTIPROC_DIR`` set. With ``path=None`` a
    fresh temporary directory is made; an explicit path is created if needed and stale ``*.db``
    files from an earlier run are removed (otherwise dead processes' counts would be summed in).
    """
    if path is None:
        mp_dir = Path(tempfile.mkdtemp(prefix="ser-prom-"))
    else:
        mp_dir = Path(path)
        mp_dir.mkdir(parents=True, exist_ok=True)
        for stale in mp_dir.glob("*.db"):
            stale.unlink()
    os.environ[ENV_VAR] = str(mp_dir)
    return mp_dir


def cleanup_multiprocess_dir(path: str | Path) -> None:
    """Remove the directory and unset the variable if it still points at it (metrics created in
    this process afterwards are in-memory again)."""
    shutil.rmtree(path, ignore_errors=True)
    if os.environ.get(ENV_VAR) == str(path):
        del os.environ[ENV_VAR]
        if values.ValueClass is not values.MutexValue:
            values.ValueClass = values.get_value_class()


@contextlib.contextmanager
def multiprocess_dir(path: str | Path | None = None) -> Iterator[Path]:
    """``setup_multiprocess_dir`` ... ``cleanup_multiprocess_dir`` as a context manager."""
    mp_dir = setup_multiprocess_dir(path)
    try:
        yield mp_dir
    finally:
        cleanup_multiprocess_dir(mp_dir)


def mark_process_dead(pid: int, path: str | Path | None = None) -> None:
    """Tell the collector a child is gone: drops its live gauges (ser_workers, ser_workers_ready).

    Its counters and histograms stay (they are summed over dead processes too, as they must be).
    """
    mp_path = str(path) if path is not None else os.environ.get(ENV_VAR)
    if mp_path:
        prom_mp.mark_process_dead(pid, mp_path)


# --------------------------------------------------------------------------- worker side


def _ensure_multiprocess_values() -> None:
    """prometheus_client picks its value store at import; re-pick if the variable came later."""
    if os.environ.get(ENV_VAR) and values.ValueClass is values.MutexValue:
        values.ValueClass = values.get_value_class()


_REASON_RE = re.compile(r"[^a-z0-9_]+")


def _reason(reason: str) -> str:
    cleaned = _REASON_RE.sub("_", reason.strip().lower()).strip("_")[:40]
    return cleaned or "unknown"


class WorkerMetrics:
    """The metrics one worker process records. Create once per process, after spawn.

    In a pool the values go to ``PROMETHEUS_MULTIPROC_DIR`` (see :func:`setup_multiprocess_dir`)
    and the metrics are not registered anywhere in the child. Without that variable (a single
    process, tests) pass ``registry`` to collect them directly.
    """

    def __init__(self, labels: Sequence[str] = DEFAULT_LABELS, *, registry: CollectorRegistry | None = None) -> None:
        _ensure_multiprocess_values()
        self.labels = tuple(labels)
        self._known_labels = set(self.labels) | {"none"}
        self.segments = Counter(
            "ser_segments", "Segments processed, by outcome and predicted label",
            ["status", "label"], registry=registry,
        )
        self.stage_seconds = Histogram(
            "ser_stage_seconds", "Time spent in one processing stage of a segment",
            ["stage"], buckets=STAGE_BUCKETS, registry=registry,
        )
        self.end_to_end_seconds = Histogram(
            "ser_end_to_end_seconds", "Time from enqueueing a segment to publishing its result",
            buckets=E2E_BUCKETS, registry=registry,
        )
        self.errors = Counter("ser_errors", "Errors, by reason", ["reason"], registry=registry)
        self.busy_seconds = Counter(
            "ser_worker_busy_seconds", "Seconds worker processes spent on jobs (rate / ser_workers = busy ratio)",
            registry=registry,
        )
        self.workers = Gauge(
            "ser_workers", "Live worker processes", multiprocess_mode="livesum", registry=registry,
        )
        self.workers_ready = Gauge(
            "ser_workers_ready", "Live worker processes with their model loaded",
            multiprocess_mode="livesum", registry=registry,
        )
        # Pre-create the label sets so the families show up (at zero) before the first segment.
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
        for label in self.labels:
            self.segments.labels(status="ok", label=label)
        self.segments.labels(status="error", label="none")
        self.workers.set(1)

    def ready(self, loaded: bool = True) -> None:
        """Mark this process's model as loaded (readiness) or not."""
        self.workers_ready.set(1 if loaded else 0)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage (``decode``, ``features``, ``inference``, ``publish``), even when it raises."""
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; expected one of {STAGES}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds.labels(stage=name).observe(time.perf_counter() - start)

    def observe_stage(self, name: str, seconds: float) -> None:
        """Record a stage duration measured elsewhere."""
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; expected one of {STAGES}")
        self.stage_seconds.labels(stage=name).observe(seconds)

    def segment(self, status: str, label: str | None = None) -> None:
        """Count one segment: ``status`` in ok/error/skipped; ``label`` the predicted label (ok only)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {STATUSES}")
        if label is None:
            label = "none"
        elif label not in self._known_labels:
            label = "other"
        self.segments.labels(status=status, label=label).inc()

    def error(self, reason: str) -> None:
        """Count an error. ``reason`` should come from a small fixed set (stage names, ``bad_job`` ...)."""
        self.errors.labels(reason=_reason(reason)).inc()

    def busy(self, seconds: float) -> None:
        """Add time this process spent working on a job."""
        if seconds > 0:
            self.busy_seconds.inc(seconds)

    @contextlib.contextmanager
    def busy_timer(self) -> Iterator[None]:
        """Time a whole job as busy time."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.busy(time.perf_counter() - start)

    def e2e(self, seconds: float) -> None:
        """Record enqueue-to-publish latency of one segment."""
        self.end_to_end_seconds.observe(max(0.0, seconds))

    def e2e_since(self, enqueued_at: datetime | float, now: datetime | float | None = None) -> float:
        """Record latency from ``enqueued_at`` (an aware/naive-UTC datetime, e.g. RQ's
        ``job.enqueued_at``, or a Unix timestamp) to now; returns the seconds recorded."""
        start = _to_epoch(enqueued_at)
        end = time.time() if now is None else _to_epoch(now)
        seconds = max(0.0, end - start)
        self.end_to_end_seconds.observe(seconds)
        return seconds


def _to_epoch(value: datetime | float) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # RQ stores naive UTC
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    return float(value)


# --------------------------------------------------------------------------- server side

_RQ_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S")


def _parse_rq_time(raw: bytes | str | None) -> datetime | None:
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    for fmt in _RQ_TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def queue_key(queue: str) -> str:
    """RQ's Redis list for a queue name (``ser`` -> ``rq:queue:ser``); a full key is kept."""
    return queue if queue.startswith("rq:queue:") else f"rq:queue:{queue}"


def _model_labels(model_info: Any) -> dict[str, str] | None:
    """name/version/labels from a Mapping or an object with those attributes (models.bundle.Spec)."""
    if model_info is None:
        return None
    get = model_info.get if isinstance(model_info, Mapping) else lambda k: getattr(model_info, k, None)
    labels = get("labels") or ()
    return {
        "name": str(get("name") or "unknown"),
        "version": str(get("version") or "unknown"),
        "labels": labels if isinstance(labels, str) else ",".join(str(v) for v in labels),
    }


class SerCollector(Collector):
    """Metrics the metrics-server process computes on each scrape.

    ``ser_queue_depth`` (LLEN of the RQ list) and ``ser_queue_oldest_job_age_seconds`` (now minus
    ``enqueued_at`` of the job at the head of the list; 0 when empty) from Redis, ``ser_redis_up``,
    ``ser_model_info{name,version,labels}``, and the producers' counters kept in the Redis hash
    :data:`PRODUCER_METRICS_KEY` (``ser_producer_*``).
    """

    def __init__(self, redis: Any = None, queue: str | None = None, model_info: Any = None) -> None:
        self.redis = redis
        self.queue = queue
        self.model_info = _model_labels(model_info)

    def set_model_info(self, model_info: Any) -> None:
        self.model_info = _model_labels(model_info)

    def collect(self) -> Iterable[Metric]:
        if self.model_info is not None:
            info = InfoMetricFamily("ser_model", "Model serving the results (name@version, ordered labels)")
            info.add_metric([], self.model_info)
            yield info
        if self.redis is None:
            return
        up = GaugeMetricFamily("ser_redis_up", "1 if the metrics server reached Redis on this scrape")
        try:
            depth, oldest_age = self._queue_state() if self.queue else (None, None)
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Redis is down
            log.warning("queue metrics unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        try:
            yield from self._producer_counters()
        except Exception as exc:  # noqa: BLE001
            log.warning("producer counters unavailable: %s", exc)
        if depth is not None:
            yield GaugeMetricFamily("ser_queue_depth", "Jobs waiting in the RQ queue", value=depth)
            yield GaugeMetricFamily(
                "ser_queue_oldest_job_age_seconds", "Age of the oldest waiting job (0 when the queue is empty)",
                value=oldest_age or 0.0,
            )

    def _queue_state(self) -> tuple[int, float]:
        assert self.queue is not None
        key = queue_key(self.queue)
        depth = int(self.redis.llen(key))
        age = 0.0
        if depth:
            # RQ appends with RPUSH and pops from the left: index 0 is the oldest waiting job.
            head = self.redis.lindex(key, 0)
            if head is not None:
                job_id = head.decode() if isinstance(head, bytes) else str(head)
                enqueued = _parse_rq_time(self.redis.hget(f"rq:job:{job_id}", "enqueued_at"))
                if enqueued is not None:
                    age = max(0.0, time.time() - enqueued.timestamp())
        return depth, age

    def _producer_counters(self) -> Iterator[Metric]:
        raw = self.redis.hgetall(PRODUCER_METRICS_KEY) or {}
        fields = {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in raw.items()}
        segments = CounterMetricFamily(
            "ser_producer_segments", "Segments cut by producers, by outcome", labels=["outcome"])
        for outcome in ("enqueued", "skipped_silence"):
            segments.add_metric([outcome], fields.get(f"segments:{outcome}", 0.0))
        yield segments
        yield CounterMetricFamily("ser_producer_silence_seconds", "Audio seconds producers skipped as silence",
                                  value=fields.get("silence_seconds", 0.0))
        yield CounterMetricFamily("ser_producer_backpressure_wait_seconds",
                                  "Seconds producers waited for the queue to drain",
                                  value=fields.get("backpressure_wait_seconds", 0.0))
        calls = CounterMetricFamily("ser_producer_calls", "Calls finished by producers", labels=["status"])
        for status in ("ok", "error"):
            calls.add_metric([status], fields.get(f"calls:{status}", 0.0))
        yield calls

    def ping(self) -> bool:
        if self.redis is None:
            return True
        try:
            return bool(self.redis.ping())
        except Exception:  # noqa: BLE001
            return False


def multiprocess_value(registry: CollectorRegistry, name: str) -> float:
    """Sum of the samples named ``name`` in a registry (used for the default readiness check)."""
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


class MetricsServer:
    """The HTTP server behind ``--metrics-port``: ``/metrics``, ``/healthz``, ``/readyz``.

    ``/healthz`` answers 200 while the process serves. ``/readyz`` answers 200 when Redis answers
    PING (if a connection was given) and the readiness check passes: the ``ready`` callback if
    given, else :meth:`set_ready` if it was called, else at least one live worker process has
    called :meth:`WorkerMetrics.ready` (``ser_workers_ready`` >= 1); 503 otherwise.
    """

    def __init__(
        self, port: int, *, host: str = DEFAULT_METRICS_HOST, redis: Any = None, queue: str | None = None,
        model_info: Any = None, ready: Callable[[], bool] | None = None, multiprocess_path: str | Path | None = None,
    ) -> None:
        mp_path = str(multiprocess_path) if multiprocess_path is not None else os.environ.get(ENV_VAR)
        self.collector = SerCollector(redis=redis, queue=queue, model_info=model_info)
        self.registry = CollectorRegistry(auto_describe=False)
        self._workers_registry: CollectorRegistry | None = None
        if mp_path:
            prom_mp.MultiProcessCollector(self.registry, path=mp_path)
            self._workers_registry = CollectorRegistry(auto_describe=False)
            prom_mp.MultiProcessCollector(self._workers_registry, path=mp_path)
        self.registry.register(self.collector)
        self._ready_cb = ready
        self._ready_flag: bool | None = None
        self._httpd = http.server.ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="ser-metrics", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://<the address actually bound>:<port>`` (``0.0.0.0``: every interface)."""
        bound = self._httpd.server_address[0]
        host = bound.decode() if isinstance(bound, bytes) else str(bound)
        return f"http://{host or '0.0.0.0'}:{self.port}"

    def set_ready(self, ready: bool) -> None:
        """Override readiness from the pool parent (takes effect when no callback was given)."""
        self._ready_flag = ready

    def set_model_info(self, model_info: Any) -> None:
        self.collector.set_model_info(model_info)

    def readiness(self) -> tuple[bool, str]:
        if not self.collector.ping():
            return False, "redis unreachable"
        if self._ready_cb is not None:
            ok = bool(self._ready_cb())
            return ok, "ready" if ok else "not ready"
        if self._ready_flag is not None:
            return self._ready_flag, "ready" if self._ready_flag else "not ready"
        if self._workers_registry is None:
            return False, "no worker reported a loaded model"
        loaded = multiprocess_value(self._workers_registry, "ser_workers_ready")
        return (loaded >= 1, f"{int(loaded)} worker(s) with a loaded model")

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _make_handler(server: MetricsServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    self._send(200, server.render(), CONTENT_TYPE_LATEST)
                except Exception as exc:  # noqa: BLE001
                    log.exception("metrics collection failed")
                    self._send(500, f"collection failed: {exc}\n".encode())
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                ok, why = server.readiness()
                self._send(200 if ok else 503, (why + "\n").encode())
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base
            log.debug("metrics http: " + format, *args)

    return Handler


def start_metrics_server(
    port: int, *, redis: Any = None, queue: str | None = None, model_info: Any = None,
    ready: Callable[[], bool] | None = None, host: str = DEFAULT_METRICS_HOST,
) -> MetricsServer:
    """Serve ``/metrics`` (all worker processes summed + queue/model gauges), ``/healthz`` and
    ``/readyz`` on ``host:port`` from a daemon thread; ``port=0`` picks a free port (see ``.port``).

    ``redis``: a redis-py connection (queue gauges and readiness PING); ``queue``: the RQ queue
    name (``ser``) or key (``rq:queue:ser``); ``model_info``: a Mapping or object with ``name``,
    ``version``, ``labels`` (e.g. :class:`models.bundle.Spec`). Call after
    :func:`setup_multiprocess_dir`.
    """
    return MetricsServer(port, host=host, redis=redis, queue=queue, model_info=model_info, ready=ready)
