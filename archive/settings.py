"""Frozen settings of ``ser-archive`` (built by :mod:`archive.cli` from options and the environment)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from archive.db import DEFAULT_URL

#: Redis URL when neither ``--redis-url`` nor ``SER_REDIS_URL`` is given.
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
#: The consumer group every archiver joins, on ``ser:events`` and on each call's results stream.
GROUP = "ser-archive"
#: Milliseconds one ``XREADGROUP`` waits for new entries.
DEFAULT_BLOCK_MS = 1000
#: Most entries read from one stream per ``XREADGROUP`` (a batch: one database transaction).
DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 10_000
#: Seconds an entry stays pending (delivered, not acknowledged) before another archiver claims it
#: with ``XAUTOCLAIM``: the one it was delivered to is taken for dead.
DEFAULT_CLAIM_IDLE_S = 60.0
#: Seconds between two reads of the active-call registry (``ser:calls``, ``ser:calls:ended``).
DEFAULT_REFRESH_S = 1.0
#: Seconds between two scans for results streams no registry names (calls trimmed from
#: ``ser:calls:ended`` while no archiver ran, calls whose events never reached Redis, late entries).
DEFAULT_SCAN_S = 300.0
#: Seconds an ended call's results stream must stay drained before the archiver stops following it.
DEFAULT_FOLLOW_GRACE_S = 30.0
#: Largest stream entry archived (bytes of its fields); a larger one goes to the dead letters.
DEFAULT_MAX_ENTRY_BYTES = 1 << 20
#: Days an archived call is kept (``0``: for ever); the archiver prunes older calls every
#: :data:`PRUNE_EVERY_S`. The same default as ``ser-calls prune`` (archive.queries).
DEFAULT_RETENTION_DAYS = 90
PRUNE_EVERY_S = 3600.0
#: An archived call still live that nothing has written for this long (seconds) is ended with reason
#: ``lost`` (its producer died without a ``call_ended``; a live call writes events every few seconds of
#: audio, and Redis readers call it lost after ``callevents.schema.LOST_AFTER_S`` = 60 s). Checked every
#: :data:`LOST_EVERY_S`, only while the archiver owes nothing (else silence may be its own lag).
DEFAULT_LOST_AFTER_S = 600.0
LOST_EVERY_S = 60.0
#: Back-off after a database or Redis error: doubles from the first to the last value.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 5.0
#: Consumers of the group idle this long (seconds) with nothing pending are deleted from it.
CONSUMER_GC_S = 3600.0
#: Address the /metrics server binds by default: loopback only (``--metrics-host 0.0.0.0`` in a container).
DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_LOG_LEVEL = "INFO"


def default_consumer() -> str:
    """``<host>-<pid>``: unique per process, so a restarted archiver never inherits a dead one's name
    (what a dead one left pending is claimed after :data:`DEFAULT_CLAIM_IDLE_S`)."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class ArchiverSettings:
    redis_url: str = DEFAULT_REDIS_URL
    database_url: str = DEFAULT_URL
    consumer: str = ""  # "": default_consumer()
    batch_size: int = DEFAULT_BATCH_SIZE
    block_ms: int = DEFAULT_BLOCK_MS
    claim_idle_s: float = DEFAULT_CLAIM_IDLE_S
    refresh_s: float = DEFAULT_REFRESH_S
    scan_s: float = DEFAULT_SCAN_S
    follow_grace_s: float = DEFAULT_FOLLOW_GRACE_S
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    retention_days: float = DEFAULT_RETENTION_DAYS
    lost_after_s: float = DEFAULT_LOST_AFTER_S  # 0: never close a call as lost
    drain: bool = False  # exit once nothing is unread or pending (a catch-up run)
    metrics_port: int | None = None  # None: no /metrics server (0: any free port)
    metrics_host: str = DEFAULT_METRICS_HOST
    log_level: str = DEFAULT_LOG_LEVEL

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch size {self.batch_size} is not in 1..{MAX_BATCH_SIZE}")
        if self.block_ms < 1:
            raise ValueError(f"block time {self.block_ms} ms is not positive")
        for name in ("claim_idle_s", "refresh_s", "scan_s", "follow_grace_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} {getattr(self, name)} is not positive")
        if self.lost_after_s < 0:
            raise ValueError(f"lost-after {self.lost_after_s} s is negative")
        if self.retention_days < 0:
            raise ValueError(f"retention {self.retention_days} days is negative")
        if self.max_entry_bytes < 1024:
            raise ValueError(f"max entry size {self.max_entry_bytes} bytes is under 1024")

    @property
    def consumer_name(self) -> str:
        return self.consumer or default_consumer()
