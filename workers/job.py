"""The RQ job: fetch a batch's PCM, classify it with the process's model, publish the records.

The model is loaded once per worker process (:func:`set_model`, called by
:mod:`workers.process` before the first job). Every outcome, including errors, is published to
the call's results stream, so a producer never waits for a job that failed.

Metrics hooks: :func:`set_stage_timer` installs ``timer(stage) -> context manager``; the job wraps
its stages (:data:`STAGES`) in it. :func:`set_job_observer` installs
``observer(records, seconds, enqueued_at)``, called after each job. The defaults do nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from workers.contract import (
    JOB_FUNC,
    RESULTS_MAXLEN,
    RESULTS_TTL_S,
    Classifier,
    StageTimer,
    check_payload,
    classify,
    encode_entry,
    failure_records,
    no_timer,
)

log = logging.getLogger(__name__)

#: Stage names passed to the stage timer, in order (``decode`` includes the Redis GETDEL).
STAGES = ("decode", "features", "inference", "publish")

#: ``observer(records, job_seconds, enqueued_at)``; enqueued_at is RQ's datetime (or None).
JobObserver = Callable[[list[dict[str, Any]], float, Any], None]

_model: Classifier | None = None
_timer: StageTimer = no_timer
_observer: JobObserver | None = None


def set_model(model: Classifier | None) -> None:
    """Install the process's model (one per process, reused by every job)."""
    global _model
    _model = model


def get_model() -> Classifier:
    """The installed model; loads the shipped bundle on first use if none was installed."""
    global _model
    if _model is None:
        from models.runtime import EmotionModel

        _model = EmotionModel()
    return _model


def set_stage_timer(timer: StageTimer | None) -> None:
    """Install a metrics hook: ``timer(stage)`` must return a context manager."""
    global _timer
    _timer = timer if timer is not None else no_timer


def set_job_observer(observer: JobObserver | None) -> None:
    """Install a per-job metrics hook (see :data:`JobObserver`)."""
    global _observer
    _observer = observer


def publish(connection: Any, payload: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """XADD the records to the call's stream (MAXLEN ~) and refresh its TTL, in one round trip."""
    key = payload["results_key"]
    pipe = connection.pipeline(transaction=False)
    for rec in records:
        pipe.xadd(key, encode_entry(rec), maxlen=RESULTS_MAXLEN, approximate=True)
    pipe.expire(key, RESULTS_TTL_S)
    pipe.execute()


def run_batch(connection: Any, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Do one job's work against ``connection`` and return the published records; never raises
    for a bad batch (only when Redis itself fails, or for a payload with nowhere valid to publish to:
    ValueError, the job then fails in RQ's failed registry with that reason)."""
    check_payload(payload)
    model_id: str | None = None
    try:
        model = get_model()
        model_id = model.model_id
        with _timer("decode"):
            pcm = connection.getdel(payload["pcm_key"])
        if pcm is None:
            records = failure_records(payload, "PCM data expired or missing (job ran too late or twice)",
                                      model=model_id)
        else:
            records = classify(model, payload, pcm, _timer)
    except Exception as exc:  # any bad batch becomes failure records, the worker keeps going
        records = failure_records(payload, f"{type(exc).__name__}: {exc}", model=model_id)
    with _timer("publish"):
        publish(connection, payload, records)
    return records


def process(payload: dict[str, Any]) -> dict[str, int]:
    """The RQ job function (:data:`workers.contract.JOB_FUNC`)."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        raise RuntimeError(f"{JOB_FUNC} must run inside an RQ worker")
    start = time.perf_counter()
    records = run_batch(job.connection, payload)
    if _observer is not None:
        try:
            _observer(records, time.perf_counter() - start, job.enqueued_at)
        except Exception as exc:  # metrics must never fail a job whose records are published
            log.warning("job observer failed: %s: %s", type(exc).__name__, exc)
    return {"segments": len(records), "failed": sum(r["kind"] == "failure" for r in records)}


def on_failure(job: Any, connection: Any, exc_type: Any, exc_value: Any, tb: Any) -> None:
    """RQ on_failure callback: publish failure records for a job that crashed or timed out."""
    try:
        payload = check_payload(job.args[0])
        records = failure_records(payload, f"job failed: {getattr(exc_type, '__name__', exc_type)}: {exc_value}")
        publish(connection, payload, records)
    except Exception:  # a malformed payload has nowhere to publish to
        pass
