"""What a worker pool looks like from Redis: queue depth and age, workers and their models, failed jobs.

Every worker process advertises itself in ``ser:worker:<rq worker name>`` (JSON: model id, host,
pid, start time; refreshed every :data:`ADVERTISE_EVERY_S`, expiring after :data:`ADVERTISE_TTL_S`
so a killed worker disappears by itself). :func:`pool_status` joins that with RQ's own worker
registry, queue and failed-job registry; ``ser-status`` prints it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

#: Key prefix of the per-worker advertisement.
ADVERTISE_PREFIX = "ser:worker:"
#: Seconds between refreshes of a worker's advertisement, and its expiry.
ADVERTISE_EVERY_S = 15.0
ADVERTISE_TTL_S = 60
#: States :func:`pool_status` gives a registered RQ worker that is not serving: its process is gone
#: (same host, pid not running), or it has no advertisement (killed more than ADVERTISE_TTL_S ago on
#: another host, or a plain ``rq worker`` that does not advertise a model).
DEAD = "dead"
STALE = "stale"
#: Failed jobs listed in full by :func:`pool_status`.
FAILED_SHOWN = 5


def advertise(connection: Any, *, name: str, model_id: str) -> Callable[[], None]:
    """Keep ``ser:worker:<name>`` fresh from a daemon thread; returns ``retire()``, which stops the
    thread and deletes the key (a killed worker's key simply expires)."""
    key = ADVERTISE_PREFIX + name
    body = json.dumps({"name": name, "model": model_id, "host": socket.gethostname(), "pid": os.getpid(),
                       "started": datetime.now(UTC).isoformat(timespec="seconds")})
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                connection.set(key, body, ex=ADVERTISE_TTL_S)
            except Exception:  # Redis away: the worker loop deals with that; try again later
                pass
            stop.wait(ADVERTISE_EVERY_S)

    def retire() -> None:
        stop.set()
        try:
            connection.delete(key)
        except Exception:
            pass

    threading.Thread(target=loop, name="ser-advertise", daemon=True).start()
    return retire


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _age_s(job_hash: dict[bytes, bytes], now: datetime) -> float | None:
    raw = job_hash.get(b"enqueued_at")
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw.decode().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (now - when).total_seconds())


def pool_status(connection: Any, queue: str) -> dict[str, Any]:
    """A JSON-able snapshot: ``queue`` (depth, oldest_age_s, started, failed), ``workers`` (one per
    RQ worker: name, state, current job, model), ``models`` (model id -> workers), ``failed_jobs``
    (the newest few: id, ended_at, reason)."""
    from rq import Queue, Worker
    from rq.exceptions import NoSuchJobError
    from rq.job import Job
    from rq.registry import FailedJobRegistry, StartedJobRegistry
    from rq.serializers import JSONSerializer

    now = datetime.now(UTC)
    q = Queue(queue, connection=connection, serializer=JSONSerializer)
    depth = int(connection.llen(q.key))
    oldest = connection.lindex(q.key, 0) if depth else None  # RQ pops from the left: the oldest
    oldest_age = _age_s(connection.hgetall(f"rq:job:{oldest.decode()}"), now) if oldest else None
    failed_reg = FailedJobRegistry(queue=q)
    started_reg = StartedJobRegistry(queue=q)
    failed_ids = failed_reg.get_job_ids(-FAILED_SHOWN, -1)
    failed = []
    for job_id in reversed(failed_ids):
        try:
            job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
        except NoSuchJobError:
            continue
        result = job.latest_result()
        reason = ((result.exc_string if result is not None else None) or "").strip().splitlines()
        failed.append({"id": job_id, "ended_at": job.ended_at.isoformat(timespec="seconds") if job.ended_at else None,
                       "reason": reason[-1] if reason else None})
    workers = []
    for worker in Worker.all(queue=q):
        ad = connection.get(ADVERTISE_PREFIX + worker.name)
        info = json.loads(ad) if ad else {}
        host, pid = info.get("host") or worker.hostname, info.get("pid") or worker.pid
        state = str(worker.get_state())
        if host == socket.gethostname() and pid and not _pid_alive(int(pid)):
            state = DEAD  # on this host, and its process is gone
        elif not ad:
            state = STALE  # stopped advertising: killed elsewhere, or not a ser-worker (plain rq worker)
        workers.append({"name": worker.name, "state": state,
                        "current_job": worker.get_current_job_id(), "model": info.get("model"),
                        "host": host, "pid": pid,
                        "last_heartbeat": worker.last_heartbeat.isoformat(timespec="seconds")
                        if worker.last_heartbeat else None})
    # the pool's model versions: of the workers that are alive (dead ones linger in RQ's registry until
    # their key expires, up to worker_ttl + 60 s, and have no model any more)
    models = Counter(w["model"] for w in workers if w["model"] and w["state"] not in (DEAD, STALE))
    return {
        "time": now.isoformat(timespec="seconds"),
        "queue": {"name": queue, "depth": depth, "oldest_age_s": oldest_age,
                  "started": started_reg.count, "failed": failed_reg.count},
        "workers": workers,
        "models": dict(models),
        "failed_jobs": failed,
    }


def status_lines(status: dict[str, Any]) -> list[str]:
    """Human-readable lines of :func:`pool_status`'s snapshot."""
    q = status["queue"]
    age = "-" if q["oldest_age_s"] is None else f"{q['oldest_age_s']:.1f} s"
    gone = [w for w in status["workers"] if w["state"] in (DEAD, STALE)]
    lines = [f"queue {q['name']}: {q['depth']} queued (oldest {age}), {q['started']} running, {q['failed']} failed",
             f"workers: {len(status['workers']) - len(gone)}"
             + ("" if not status["models"] else " (" + ", ".join(f"{m} x{n}" for m, n in status["models"].items())
                + ")")
             + (f"; {len(gone)} gone (dead, or not advertising a model; RQ forgets them when their key expires)"
                if gone else "")]
    for w in status["workers"]:
        lines.append(f"  {w['name']}  {w['state']:<9} model={w['model'] or 'unknown'}  host={w['host']}  "
                     f"pid={w['pid']}  job={w['current_job'] or '-'}  heartbeat={w['last_heartbeat'] or '-'}")
    if len(status["models"]) > 1:
        lines.append("warning: the pool runs more than one model version")
    for f in status["failed_jobs"]:
        lines.append(f"  failed {f['id']} at {f['ended_at'] or '?'}: {f['reason'] or '?'}")
    return lines


def wait_for_workers(connection: Any, queue: str, n: int, timeout_s: float) -> bool:
    """Poll until ``n`` workers advertise a model (used by tests and scripts)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(1 for w in pool_status(connection, queue)["workers"] if w["model"]) >= n:
            return True
        time.sleep(0.1)
    return False
