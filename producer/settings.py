"""Frozen settings of one ``ser-produce`` run (built by :mod:`producer.cli` from options/env)."""

from __future__ import annotations

from dataclasses import dataclass

from callevents.rules import EventSettings
from workers.contract import DEFAULT_QUEUE, read_url_file

#: Segments per job for files read as fast as possible (measured: docs/pipeline.md, "Throughput").
DEFAULT_BATCH_FILE = 16
#: Segments per job for live input (stdin) and ``--realtime``: every segment leaves at once.
DEFAULT_BATCH_LIVE = 1
#: Stop reading while the queue holds this many jobs.
DEFAULT_MAX_PENDING = 64
#: Seconds without progress (a new result, or the queue shrinking) before giving up.
DEFAULT_TIMEOUT_S = 60.0
#: Re-send a batch that has no result this many seconds after it was sent (0: never); see
#: docs/pipeline.md, "Delivery guarantees".
DEFAULT_RESEND_AFTER_S = 30.0
#: Socket timeout of the producer's Redis client: ``--timeout`` clamped to this range (seconds). Every
#: blocking read the producer makes waits at most 0.5 s, so the floor leaves room; the ceiling keeps a
#: hung Redis (a stopped process, a black-holed network) from holding one command longer than that;
#: the reconnect loop then gives up after ``--timeout``. redis-py < 8 has no default socket timeout.
SOCKET_TIMEOUT_MIN_S = 1.5
SOCKET_TIMEOUT_MAX_S = 5.0
#: Input block length: audio is read, resampled and paced in blocks of this many seconds.
BLOCK_S = 0.1
#: Raw PCM defaults for ``-`` with ``--rate``.
DEFAULT_RAW_CHANNELS = 1
DEFAULT_RAW_ENCODING = "pcm16"
FORMATS = ("table", "jsonl", "csv")
DEFAULT_FORMAT = "table"


@dataclass(frozen=True)
class RawFormat:
    """Headerless interleaved little-endian PCM on stdin (see models.audio.RAW_ENCODINGS)."""

    rate: int
    channels: int = DEFAULT_RAW_CHANNELS
    encoding: str = DEFAULT_RAW_ENCODING


@dataclass(frozen=True)
class ProducerSettings:
    audio: str  # a path, or "-" for stdin
    stream_id: str
    model_dir: str | None = None  # None: models.bundle.DEFAULT_BUNDLE
    redis_url: str | None = None  # None: embedded mode, no Redis
    queue: str = DEFAULT_QUEUE
    raw: RawFormat | None = None
    realtime: bool = False
    channel_names: tuple[str, ...] = ()
    batch: int = DEFAULT_BATCH_FILE
    max_pending: int = DEFAULT_MAX_PENDING
    timeout_s: float = DEFAULT_TIMEOUT_S
    resend_after_s: float = DEFAULT_RESEND_AFTER_S
    output_format: str = DEFAULT_FORMAT
    events: EventSettings | None = None  # alert rules and trend (None: callevents.rules defaults)
    params: tuple[tuple[str, str], ...] = ()  # --meta: the call's custom parameters (call_started.params)


def connection_options(redis_url: str | None, redis_url_file: str | None, alert_rules: str | None
                       ) -> tuple[str | None, EventSettings | None]:
    """The Redis URL (``redis_url_file`` wins: it keeps a password out of argv) and the call-event
    settings (``alert_rules``: a TOML file) that every ingestion CLI takes; ValueError names the problem."""
    if redis_url_file:
        redis_url = read_url_file(redis_url_file)
    events = None
    if alert_rules:
        from callevents.rules import load_settings

        events = load_settings(alert_rules)
    return redis_url, events
