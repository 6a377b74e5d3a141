"""What a worker refuses: jobs it did not expect, written to its queue by anyone with access.

* :class:`SafeJob` (RQ's ``job_class``): JSON only (RQ's ``JSONSerializer`` never unpickles; a
  pickled or otherwise undecodable ``data`` is refused), at most :data:`MAX_JOB_DATA_BYTES` of job
  data (compressed and decompressed: no zip bombs), the function must be :data:`ALLOWED_FUNCS` and
  callbacks :data:`ALLOWED_CALLBACKS` (RQ would otherwise import whatever dotted path a job names).
  A refused function never gets imported: the job fails with ``PermissionError`` and lands in RQ's
  failed registry with that reason.
* :class:`SafeQueue` (RQ's ``queue_class``): a job that cannot even be loaded (bad bytes, pickle,
  oversized) would make RQ's work loop quit; here it is put in the failed registry
  (``rq:failed:<queue>``) and its reason appended to the stream :data:`REJECTED_KEY`, and the
  worker goes on with the next job.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from typing import Any

from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.utils import decode_redis_hash

from workers.contract import FAILURE_CALLBACK, JOB_FAILURE_TTL_S, JOB_FUNC

log = logging.getLogger(__name__)

#: Functions a job may call, and callbacks it may name.
ALLOWED_FUNCS = frozenset({JOB_FUNC})
ALLOWED_CALLBACKS = frozenset({FAILURE_CALLBACK})
#: Most bytes of RQ job data (the JSON payload; PCM lives in its own key), before and after zlib.
MAX_JOB_DATA_BYTES = 256 << 10
#: Stream of jobs refused before they could be loaded (job id, queue, reason), capped.
REJECTED_KEY = "ser:rejected"
REJECTED_MAXLEN = 10_000


class RefusedJob(NoSuchJobError):
    """A job this worker will not load or run. A :class:`NoSuchJobError`, so that RQ's own code
    that fetches jobs (registry cleanup, say) skips it instead of failing its work loop."""


def _refuse(reason: str) -> Any:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(reason)

    return refused


class SafeJob(Job):
    """An RQ job that only ever runs :data:`ALLOWED_FUNCS` from bounded JSON data."""

    def restore(self, raw_data: Any) -> Any:
        obj = decode_redis_hash(raw_data)
        data = obj.get("data")
        if data is not None:
            if len(data) > MAX_JOB_DATA_BYTES:
                raise RefusedJob(f"job data of {len(data)} bytes is over the {MAX_JOB_DATA_BYTES}-byte limit")
            try:
                inflated = zlib.decompressobj().decompress(data, MAX_JOB_DATA_BYTES + 1)
            except zlib.error:
                inflated = data
            if len(inflated) > MAX_JOB_DATA_BYTES:
                raise RefusedJob(f"job data inflates to over {MAX_JOB_DATA_BYTES} bytes")
        out = super().restore(raw_data)
        try:
            self._deserialize_data()  # now, not lazily inside the work loop
        except Exception as exc:
            raise RefusedJob(f"job data is not a JSON job ({type(exc.__cause__ or exc).__name__})") from None
        for name in (self._success_callback_name, self._failure_callback_name, self._stopped_callback_name):
            if name and name not in ALLOWED_CALLBACKS:
                raise RefusedJob(f"callback {name!r} is not allowed")
        return out

    @property
    def func(self) -> Any:
        name = self.func_name
        if name not in ALLOWED_FUNCS or self.instance is not None:
            return _refuse(f"refused: function {name!r} is not in the allow-list {sorted(ALLOWED_FUNCS)}")
        return super().func


def record_rejected(connection: Any, queue: Any, job_id: Any, reason: str) -> None:
    """Put an unloadable job in the queue's failed registry and say why in :data:`REJECTED_KEY`."""
    jid = job_id.decode() if isinstance(job_id, bytes) else str(job_id)
    log.warning("refused job %r from queue %r: %s", jid[:200], getattr(queue, "name", "?"), reason)
    try:
        pipe = connection.pipeline(transaction=False)
        if queue is not None:
            pipe.zadd(queue.failed_job_registry.key, {jid: time.time() + JOB_FAILURE_TTL_S})
        pipe.xadd(REJECTED_KEY, {"job_id": jid[:200], "queue": str(getattr(queue, "name", "")),
                                 "reason": reason[:500], "at": json.dumps(time.time())},
                  maxlen=REJECTED_MAXLEN, approximate=True)
        pipe.execute()
    except Exception as exc:  # recording is best effort; the job is off the queue either way
        log.warning("could not record the refused job: %s", exc)


class SafeQueue(Queue):
    """A queue whose workers skip (and record) jobs they cannot load, instead of quitting."""

    @classmethod
    def dequeue_any(cls, queues: Any, timeout: Any, connection: Any, job_class: Any = None, serializer: Any = None,
                    death_penalty_class: Any = None) -> Any:
        while True:
            try:
                return super().dequeue_any(queues, timeout, connection=connection, job_class=job_class,
                                           serializer=serializer, death_penalty_class=death_penalty_class)
            except UnicodeDecodeError as exc:  # a job id that is not UTF-8: already popped, record it
                record_rejected(connection, None, "<not UTF-8>", f"job id is not UTF-8: {exc}")

    @classmethod
    def _fetch_dequeued_job(cls, connection: Any, queue_key: str, job_id: str, job_class: Any = None,
                            serializer: Any = None, death_penalty_class: Any = None) -> Any:
        from rq.utils import backend_class

        job_cls: Any = backend_class(cls, "job_class", override=job_class)
        queue = cls.from_queue_key(queue_key, connection=connection, job_class=job_cls, serializer=serializer,
                                   death_penalty_class=death_penalty_class)
        try:
            job = job_cls.fetch(job_id, connection=connection, serializer=serializer)
        except RefusedJob as exc:
            record_rejected(connection, queue, job_id, f"RefusedJob: {exc}")
            return None
        except NoSuchJobError:
            return None  # gone meanwhile (as RQ does)
        except Exception as exc:
            import redis

            if isinstance(exc, redis.RedisError):
                raise  # Redis trouble is the work loop's business (reconnect), not the job's
            record_rejected(connection, queue, job_id, f"{type(exc).__name__}: {exc}")
            return None
        return job, queue
