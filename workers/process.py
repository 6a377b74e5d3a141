"""One worker process: load and warm the model once, then run a non-forking RQ worker."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from workers.settings import WorkerSettings
from workers.status import advertise

log = logging.getLogger(__name__)

#: Seconds between checks that the pool parent is still alive.
PARENT_POLL_S = 1.0
#: Reconnect back-off after Redis went away: first wait, factor, longest wait (seconds).
RECONNECT_FIRST_S = 0.2
RECONNECT_FACTOR = 2.0
RECONNECT_MAX_S = 5.0
#: RQ refreshes its worker key (HSET + 2 EXPIREs, 3 round trips) up to three times per job and
#: checks for ``rq suspend`` before every job. :class:`LeanWorkerMixin` skips a heartbeat when the key
#: already lives within this many seconds of what RQ asks for (RQ asks for 180-480 s), and sends the
#: others as one pipelined round trip.
HEARTBEAT_SLACK_S = 5.0
#: Least seconds between two ``rq suspend`` checks (a suspension is noticed within this time).
SUSPEND_CHECK_S = 1.0
#: Socket timeouts of a worker's Redis client. RQ blocks up to ``worker_ttl - 15`` s (405 s by default) in
#: one dequeue and wants a socket timeout of 10 s more; a connection opened with redis-py 8's default
#: (5 s) keeps it, so every idle dequeue timed out: a log line and a 1-5 s back-off that a job arriving
#: then had to wait out. A hung Redis is still noticed after this long.
WORKER_SOCKET_TIMEOUT_S = 450.0
CONNECT_TIMEOUT_S = 5.0
#: ``ser:probe:<worker>``: a tiny key a worker writes to learn that Redis accepts writes again (after a
#: lost connection or a Redis at ``maxmemory``); it expires after :data:`PROBE_TTL_S`.
PROBE_PREFIX = "ser:probe:"
PROBE_TTL_S = 10
#: Logged once when a worker finds Redis full (then once more when writes are accepted again).
OUT_OF_MEMORY_LINE = ("Redis is out of memory (maxmemory reached, writes refused): jobs stay queued; waiting "
                      "for room (free memory or raise maxmemory; docs/pipeline.md, \"Redis memory\")")


_stop_requested = False


def _remember_stop(signum: int, frame: Any) -> None:
    global _stop_requested
    _stop_requested = True


def _watch_parent(parent: int) -> None:
    """Ask for a warm shutdown when the pool parent dies (the child is then re-parented)."""
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def failure_reason(error: str) -> str:
    """A short, bounded metrics reason for a failure record's error text."""
    if error.startswith("model mismatch"):
        return "model_mismatch"
    if error.startswith("PCM data"):
        return "pcm_missing"
    if error.startswith("job failed"):
        return "job_failed"
    return "job_error"


def install_metrics(model: Any) -> None:
    """Record this process's jobs with workers.metrics (stage timers, segments, latency, busy time)."""
    from workers import job
    from workers.metrics import WorkerMetrics

    metrics = WorkerMetrics(labels=model.labels)

    def observe(records: list[dict[str, Any]], seconds: float, enqueued_at: Any) -> None:
        reasons = set()
        for rec in records:
            if rec["kind"] == "result":
                metrics.segment("ok", rec["label"])
            else:
                metrics.segment("error")
                reasons.add(failure_reason(str(rec.get("error", ""))))
            if enqueued_at is not None:
                metrics.e2e_since(enqueued_at)
        for reason in reasons:
            metrics.error(reason)
        metrics.busy(seconds)

    job.set_stage_timer(metrics.stage)
    job.set_job_observer(observe)
    metrics.ready()


class LeanWorkerMixin:
    """Fewer Redis round trips per job for an RQ worker (measured in docs/benchmark.md): heartbeats
    that would not extend the worker key's life by more than :data:`HEARTBEAT_SLACK_S` are skipped
    and the rest pipelined, the suspension check runs at most every :data:`SUSPEND_CHECK_S`, and a
    state RQ already wrote is not written again. What RQ stores is unchanged."""

    _alive_until = float("-inf")  # monotonic time the worker key is known to live until
    _suspend_checked = float("-inf")
    _state_written: str | None = None

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        ttl = timeout or self.worker_ttl + 60  # type: ignore[attr-defined]  # RQ's default
        now = time.monotonic()
        if pipeline is None:
            if now + ttl <= self._alive_until + HEARTBEAT_SLACK_S:
                return
            with self.connection.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
                super().heartbeat(ttl, pipeline=pipe)  # type: ignore[misc]
                pipe.execute()
        else:
            super().heartbeat(ttl, pipeline=pipeline)  # type: ignore[misc]
        self._alive_until = now + ttl

    def check_for_suspension(self, burst: bool) -> None:
        now = time.monotonic()
        if now - self._suspend_checked >= SUSPEND_CHECK_S:
            super().check_for_suspension(burst)  # type: ignore[misc]
            self._suspend_checked = time.monotonic()

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is None and state == self._state_written:
            self._state = state
            return
        super().set_state(state, pipeline=pipeline)  # type: ignore[misc]
        self._state_written = state if pipeline is None else None


def make_worker(connection: Any, queue_name: str, *, name: str | None = None) -> Any:
    """A non-forking RQ worker with JSON jobs, :class:`workers.safety.SafeJob` (allow-listed
    function, bounded data, never pickle) and :class:`workers.safety.SafeQueue` (unloadable jobs
    are recorded as failed, not fatal), with :class:`LeanWorkerMixin`'s fewer round trips. A stop
    signal is remembered in this module."""
    from rq import SimpleWorker
    from rq.serializers import JSONSerializer

    from workers.safety import SafeJob, SafeQueue

    class SerWorker(LeanWorkerMixin, SimpleWorker):
        max_connection_wait_time = RECONNECT_MAX_S  # RQ's own retry while it waits for a job

        def request_stop(self, signum: Any, frame: Any) -> None:
            _remember_stop(signum, frame)
            super().request_stop(signum, frame)

        def unsubscribe(self) -> None:
            """Stop RQ's command-channel thread before RQ unsubscribes. RQ's thread waits in
            ``get_message(timeout=60)``; RQ sends UNSUBSCRIBE and only then clears the thread's
            running flag with ``stop()``, which since redis-py 8.2 also waits for the thread: when the
            UNSUBSCRIBE reply arrived before the flag was cleared, the thread went back to its 60 s
            wait, and so did every stop (ser-worker took 60 s to exit after SIGTERM, at random)."""
            thread = getattr(self, "pubsub_thread", None)
            if thread is not None:
                try:
                    thread.stop(timeout=0)  # clear the flag; the UNSUBSCRIBE reply then ends its wait
                except TypeError:  # redis-py < 8.2: stop() only clears the flag
                    thread.stop()
            super().unsubscribe()

    queue = SafeQueue(queue_name, connection=connection, serializer=JSONSerializer, job_class=SafeJob)
    return SerWorker([queue], connection=connection, serializer=JSONSerializer, job_class=SafeJob,
                     queue_class=SafeQueue, name=name)


def is_out_of_memory(exc: BaseException | None) -> bool:
    """True for Redis refusing a write at ``maxmemory`` (``OOM command not allowed ...``)."""
    import redis

    return isinstance(exc, redis.ResponseError) and (
        isinstance(exc, redis.exceptions.OutOfMemoryError) or "maxmemory" in str(exc))


def connect(url: str) -> Any:
    """A worker's Redis client: socket timeout :data:`WORKER_SOCKET_TIMEOUT_S` (longer than RQ's
    blocking dequeue), connect timeout :data:`CONNECT_TIMEOUT_S`, TCP keepalive."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=WORKER_SOCKET_TIMEOUT_S,
                                socket_connect_timeout=CONNECT_TIMEOUT_S, socket_keepalive=True)


def wait_for_redis(connection: Any, *, probe_key: str = PROBE_PREFIX + "x") -> bool:
    """Wait with exponential back-off until Redis answers and accepts a (tiny) write (True) or a stop
    is requested (False). A Redis at ``maxmemory`` answers PING but refuses writes: that wait is
    logged as one line when it starts and one when writes are accepted again."""
    import redis

    delay = RECONNECT_FIRST_S
    full = False
    while not _stop_requested:
        time.sleep(delay)
        try:
            connection.ping()
            connection.set(probe_key, b"1", ex=PROBE_TTL_S)
            if full:
                log.warning("Redis accepts writes again: serving")
            return True
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass
        except redis.ResponseError as exc:
            if not is_out_of_memory(exc):
                raise
            if not full:
                log.warning(OUT_OF_MEMORY_LINE)
            full = True
        delay = min(delay * RECONNECT_FACTOR, RECONNECT_MAX_S)
    return False


class OneLineRedisErrors(logging.Filter):
    """On RQ's ``rq.worker`` logger: a lost Redis connection is logged as one line, without the
    traceback RQ attaches ("found an unhandled exception, quitting..."); :func:`run_worker` then
    waits for Redis and starts a fresh RQ worker. A Redis at ``maxmemory`` is not logged here at all
    (:func:`wait_for_redis` logs it once). Other exceptions keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        import redis

        exc = record.exc_info[1] if record.exc_info else None
        if is_out_of_memory(exc):
            return False
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            record.msg = f"{record.msg} ({type(exc).__name__}: {exc})"
            record.exc_info = None
            record.exc_text = None
        return True


def run_worker(settings: WorkerSettings, *, name: str | None = None) -> bool:
    """Load the model, warm it up and work the queue until stopped (or empty, with burst).

    RQ's work loop quits on most Redis errors (a restart, a connection dropped while a job runs, a
    write refused at ``maxmemory``): this loop then waits with back-off until Redis answers and accepts
    writes, and starts a fresh RQ worker (named ``<name>-r<n>``, as the old name may still be
    registered), so a worker process survives Redis restarts and a full Redis by itself.
    Raises :class:`models.errors.SERError` for a bad bundle and redis errors for a bad URL.
    """
    import redis

    from models.runtime import EmotionModel
    from workers import job

    logging.getLogger("rq.worker").addFilter(OneLineRedisErrors())
    model = EmotionModel(settings.model_dir, threads=1)
    model.warmup()
    job.set_model(model)
    if settings.metrics_port is not None:
        install_metrics(model)
    connection = connect(settings.redis_url)
    connection.ping()
    if _stop_requested:
        return True
    worked = False
    attempt = 0
    worker = make_worker(connection, settings.queue, name=name)
    first = worker.name
    retire = advertise(connection, name=worker.name, model_id=model.model_id)  # for ser-status
    try:
        while True:
            try:
                worked = bool(worker.work(burst=settings.burst, logging_level=settings.log_level)) or worked
            except (redis.ConnectionError, redis.TimeoutError) as exc:  # e.g. inside RQ's teardown
                log.warning("worker loop lost Redis: %s", exc)
            except redis.ResponseError as exc:  # RQ's own registration/teardown at maxmemory
                if not is_out_of_memory(exc):
                    raise
            signal.signal(signal.SIGTERM, _remember_stop)  # RQ's handlers belong to the finished worker
            signal.signal(signal.SIGINT, _remember_stop)
            if settings.burst or _stop_requested or not wait_for_redis(connection, probe_key=PROBE_PREFIX + first):
                return worked
            attempt += 1  # the loop ended without a stop request: Redis went away and is back
            worker = make_worker(connection, settings.queue, name=f"{name or first}-r{attempt}")
            retire()  # ser-status joins advertisements to RQ workers by name: follow the new one
            retire = advertise(connection, name=worker.name, model_id=model.model_id)
    finally:
        retire()


def pool_child(settings: WorkerSettings, index: int, parent: int) -> None:
    """Entry point of a spawned pool process (exit code 0 on a clean stop, 2 on an error)."""
    os.setpgrp()  # the terminal's Ctrl-C reaches only the parent, which forwards one SIGTERM
    # A stop request while the model loads is remembered (raising inside imports would break them);
    # run_worker then exits cleanly instead of working. RQ installs its own handlers in work().
    signal.signal(signal.SIGTERM, _remember_stop)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    from models.errors import SERError

    try:
        run_worker(settings, name=f"ser-{os.uname().nodename}-{parent}-{index}")
    except SERError as exc:
        print(f"ser-worker[{index}]: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # redis connection errors and the like: one line, not a traceback
        print(f"ser-worker[{index}]: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(2)
