"""Prometheus metrics of the worker pool, correct with several processes: the metric families and
what each worker process records (:mod:`workers.exporter` serves them with the health endpoints).

How the pool wires it in (``ser-worker --processes N --metrics-port P``)::

    # pool parent, BEFORE any child process starts
    mp_dir = setup_multiprocess_dir()          # temp dir, exported as PROMETHEUS_MULTIPROC_DIR
    server = exporter.start_metrics_server(P, redis=conn, queue="ser", model_info=spec)
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
model info, Redis reachability) through :class:`workers.exporter.SerCollector`.

Busy ratio (fraction of worker wall time spent on jobs)::

    sum(rate(ser_worker_busy_seconds_total[5m])) / sum(ser_workers)

Label cardinality is bounded: ``status`` is one of :data:`STATUSES`, ``label`` one of the model's
labels (or ``none``/``other``), ``stage`` one of :data:`STAGES`, ``reason`` a short identifier.
Nothing is labelled per call or per stream.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client import multiprocess as prom_mp

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
#: The producers' conversation-dynamics counters (hash field ``dynamics:<name>``; producer.metrics
#: DYNAMICS_FIELDS names the same, a test checks), exported as ``ser_producer_<name>_total``.
DYNAMICS_HELP = {
    "talk_seconds": "Seconds of speech, every channel of every call (conversation dynamics)",
    "non_talk_seconds": "Seconds of calls in which no channel spoke",
    "silences": "Silences (no channel speaking) of at least the dynamics' silence_min_s",
    "silence_long_seconds": "Seconds of those silences",
    "overtalks": "Overtalk episodes (two or more channels speaking) of at least overtalk_min_s",
    "overtalk_seconds": "Seconds of overtalk",
    "interruptions": "Interruptions (a channel starting while another was mid-utterance)",
}
METRIC_FAMILIES.update({f"ser_producer_{name}_total": "counter" for name in DYNAMICS_HELP})

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
