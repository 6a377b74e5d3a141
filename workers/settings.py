"""Frozen settings of a worker process or pool (built by :mod:`workers.cli` from options/env)."""

from __future__ import annotations

from dataclasses import dataclass

from workers.contract import DEFAULT_QUEUE

#: Redis URL when neither ``--redis-url`` nor ``SER_REDIS_URL`` is given.
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
#: Worker processes in the pool by default (one per core is the usual choice).
DEFAULT_PROCESSES = 1
#: Most processes one pool may start.
MAX_PROCESSES = 64
#: Address the /metrics server binds by default: loopback only (pass ``--metrics-host 0.0.0.0`` where a
#: Prometheus on another host or pod scrapes it, as deploy/ does).
DEFAULT_METRICS_HOST = "127.0.0.1"
#: RQ's log level: WARNING keeps per-job lines (costly at hundreds of jobs/s) out of the log.
DEFAULT_LOG_LEVEL = "WARNING"
#: Environment variables that cap BLAS/OpenMP threads; set to "1" before numpy is imported.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS")


@dataclass(frozen=True)
class WorkerSettings:
    redis_url: str = DEFAULT_REDIS_URL
    queue: str = DEFAULT_QUEUE
    processes: int = DEFAULT_PROCESSES
    model_dir: str | None = None  # None: models.bundle.DEFAULT_BUNDLE
    burst: bool = False
    log_level: str = DEFAULT_LOG_LEVEL
    metrics_port: int | None = None  # None: no /metrics server (0: any free port)
    metrics_host: str = DEFAULT_METRICS_HOST
