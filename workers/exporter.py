"""The pool's metrics endpoint: ``/metrics`` (all worker processes summed, plus the gauges read from
Redis on each scrape), ``/healthz`` and ``/readyz``, served by the pool's parent process.

:mod:`workers.metrics` defines the metric families and what each worker process records; this
module serves them (see its docstring for the wiring and the PromQL).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import multiprocess as prom_mp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.metrics import DYNAMICS_HELP, ENV_VAR, PRODUCER_METRICS_KEY
from workers.probes import ProbeServer
from workers.settings import DEFAULT_METRICS_HOST

log = logging.getLogger(__name__)


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
        for name, doc in DYNAMICS_HELP.items():  # conversation dynamics, summed over calls
            yield CounterMetricFamily(f"ser_producer_{name}", doc, value=fields.get(f"dynamics:{name}", 0.0))

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
        self._probes = ProbeServer(port, host=host, render=self.render, readiness=self.readiness, name="ser-metrics")

    @property
    def port(self) -> int:
        return self._probes.port

    @property
    def host(self) -> str:
        """The address actually bound (``0.0.0.0``: every interface)."""
        return self._probes.host

    @property
    def url(self) -> str:
        """``http://<the address actually bound>:<port>`` (``0.0.0.0``: every interface)."""
        return f"http://{self.host}:{self.port}"

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
        self._probes.close()


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
