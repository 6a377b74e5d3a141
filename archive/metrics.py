"""The archiver's Prometheus metrics and its endpoint: ``/metrics``, ``/healthz`` and ``/readyz``
(``ser-archive --metrics-port``), served from a daemon thread like the worker pool's.

Lag and pending gauges describe the whole consumer group (every archiver sees the same numbers:
aggregate them with ``max()``); the counters are this process's.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from archive.settings import DEFAULT_METRICS_HOST
from workers.probes import ProbeServer

#: Stream label values: the global events stream and the calls' results streams.
STREAMS = ("events", "results")
#: Outcomes of an entry: archived (committed, acknowledged) or dead-lettered (kept with its reason).
OUTCOMES = ("archived", "dead_letter")
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ArchiveMetrics:
    """The metric families of one archiver process (its own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.lag = Gauge("ser_archive_lag_seconds",
                         "Now minus the time of the oldest entry not yet archived (unread or pending), any stream",
                         registry=r)
        self.pending = Gauge("ser_archive_pending_entries",
                             "Entries of the group not yet archived: delivered and unacknowledged (pending), "
                             "or not yet delivered (unread)", ["stream", "state"], registry=r)
        self.followed = Gauge("ser_archive_followed_streams", "Results streams this archiver follows", registry=r)
        self.entries = Counter("ser_archive_entries", "Stream entries this archiver finished, by outcome",
                               ["stream", "outcome"], registry=r)
        self.claimed = Counter("ser_archive_claimed_entries",
                               "Entries claimed from another (dead) archiver with XAUTOCLAIM", registry=r)
        self.db_errors = Counter("ser_archive_db_errors", "Failed database writes (retried)", registry=r)
        self.redis_errors = Counter("ser_archive_redis_errors", "Failed Redis calls (retried)", registry=r)
        self.batch_seconds = Histogram("ser_archive_batch_seconds", "Seconds to write and acknowledge one batch",
                                       buckets=BATCH_BUCKETS, registry=r)
        self.calls = Counter("ser_archive_calls", "Calls whose results stream this archiver stopped following "
                             "(ended and drained)", registry=r)
        self.db_up = Gauge("ser_archive_db_up", "1 when the latest database write succeeded", registry=r)
        self.redis_up = Gauge("ser_archive_redis_up", "1 when the latest Redis call succeeded", registry=r)
        for stream in STREAMS:
            for state in ("pending", "unread"):
                self.pending.labels(stream, state)
            for outcome in OUTCOMES:
                self.entries.labels(stream, outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def sample_names(metrics: ArchiveMetrics | None = None) -> set[str]:
    """Every sample name the archiver exports (``_total``, ``_bucket``... included): what the alert
    rules and the dashboard may use (tests/test_deploy.py)."""
    m = metrics or ArchiveMetrics()
    return {s.name for fam in m.registry.collect() for s in fam.samples}


class MetricsServer(ProbeServer):
    """``/metrics``; ``/healthz`` (200 while the process serves); ``/readyz`` (200 when ``ready()``
    says so: Redis and the database answered the latest call; 503 with the reason otherwise)."""

    def __init__(self, metrics: ArchiveMetrics, port: int, *, host: str = DEFAULT_METRICS_HOST,
                 ready: Callable[[], tuple[bool, str]] = lambda: (True, "ready")) -> None:
        self.metrics, self.ready = metrics, ready
        super().__init__(port, host=host, render=metrics.render, readiness=ready, name="ser-archive-metrics")
