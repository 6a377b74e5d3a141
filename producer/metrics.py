"""Producer-side counters, kept in Redis and exported by the workers' metrics server.

A producer is one short-lived process per call, so it serves no scrape endpoint of its own (and
a Pushgateway would lose counts between calls pushing to one group). Instead each producer adds
to a Redis hash (:data:`PRODUCER_METRICS_KEY`) on the Redis it already uses, and every worker
pool's ``/metrics`` exports that hash on scrape (``workers.exporter.SerCollector``) as:

* ``ser_producer_segments_total{outcome="enqueued"|"skipped_silence"}``
* ``ser_producer_silence_seconds_total``: audio seconds skipped by the VAD gate
* ``ser_producer_backpressure_wait_seconds_total``: time producers waited for the queue to drain
* ``ser_producer_calls_total{status="ok"|"error"}``
* conversation dynamics (``producer.dynamics``), summed over calls, no per-call labels:
  ``ser_producer_talk_seconds_total`` (every channel's talk), ``ser_producer_non_talk_seconds_total``,
  ``ser_producer_silences_total`` and ``ser_producer_silence_long_seconds_total`` (silences of at least
  the dynamics' ``silence_min_s``), ``ser_producer_overtalks_total``,
  ``ser_producer_overtalk_seconds_total``, ``ser_producer_interruptions_total``

All pools read the same hash, so aggregate with ``max()``. Recording is best effort: a Redis error
is logged once and never fails the call; while the call's link (:class:`callevents.writer.RedisLink`)
says Redis is down, nothing is tried.

Usage in the producer::

    pm = ProducerMetrics(redis_connection)
    pm.enqueued(len(batch))
    pm.skipped_silence(segments=1, seconds=hop_s)
    pm.backpressure_wait(seconds)
    pm.call_done(ok=True)
"""

from __future__ import annotations

import logging
from typing import Any

from callevents.writer import RedisLink

log = logging.getLogger(__name__)

#: Redis hash holding the producer counters (workers.metrics reads the same key; a test checks).
PRODUCER_METRICS_KEY = "ser:metrics:producer"
#: Hash fields: ``{family}:{label value}`` or ``{family}``.
FIELD_ENQUEUED = "segments:enqueued"
FIELD_SKIPPED = "segments:skipped_silence"
FIELD_SILENCE_S = "silence_seconds"
FIELD_BACKPRESSURE_S = "backpressure_wait_seconds"
FIELD_CALLS_OK = "calls:ok"
FIELD_CALLS_ERROR = "calls:error"
#: Dynamics fields: ``dynamics:<name>`` -> ``ser_producer_<name>_total`` (workers.exporter).
DYNAMICS_FIELDS = ("talk_seconds", "non_talk_seconds", "silences", "silence_long_seconds", "overtalks",
                   "overtalk_seconds", "interruptions")


class ProducerMetrics:
    """Adds to the producer counters in Redis. ``redis=None`` records nothing (embedded mode)."""

    def __init__(self, redis: Any, *, key: str = PRODUCER_METRICS_KEY, link: RedisLink | None = None) -> None:
        self.redis = redis
        self.key = key
        self.link = link
        self._warned = False

    def _add(self, *pairs: tuple[str, float]) -> None:
        if self.redis is None or (self.link is not None and self.link.down):
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for field, amount in pairs:
                if isinstance(amount, int):
                    pipe.hincrby(self.key, field, amount)
                else:
                    pipe.hincrbyfloat(self.key, field, float(amount))
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - metrics must never fail a call
            if self.link is not None:
                self.link.failed(exc)
            if not self._warned:
                log.warning("producer metrics not recorded: %s", exc)
                self._warned = True

    def enqueued(self, segments: int = 1) -> None:
        if segments > 0:
            self._add((FIELD_ENQUEUED, int(segments)))

    def skipped_silence(self, segments: int = 1, seconds: float = 0.0) -> None:
        pairs: list[tuple[str, float]] = []
        if segments > 0:
            pairs.append((FIELD_SKIPPED, int(segments)))
        if seconds > 0:
            pairs.append((FIELD_SILENCE_S, float(seconds)))
        if pairs:
            self._add(*pairs)

    def backpressure_wait(self, seconds: float) -> None:
        if seconds > 0:
            self._add((FIELD_BACKPRESSURE_S, float(seconds)))

    def dynamics(self, summary: dict[str, Any]) -> None:
        """Add one call's dynamics totals (:meth:`producer.dynamics.Dynamics.summary`)."""
        chans = summary.get("channels", {}).values()
        over = summary.get("overtalk", {})
        silence = summary["silence"]
        values = {"talk_seconds": float(sum(c["talk_s"] for c in chans)),
                  "non_talk_seconds": float(summary["non_talk_s"]),
                  "silences": int(silence["count"]), "silence_long_seconds": float(silence["total_s"]),
                  "overtalks": int(over.get("count", 0)), "overtalk_seconds": float(over.get("total_s", 0.0)),
                  "interruptions": int(sum(c.get("interruptions", 0) for c in chans))}
        self._add(*((f"dynamics:{k}", v) for k, v in values.items() if v))

    def call_done(self, ok: bool = True) -> None:
        self._add((FIELD_CALLS_OK if ok else FIELD_CALLS_ERROR, 1))
