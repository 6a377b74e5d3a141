"""Redis calls that survive a lost connection or a full Redis, with bounded back-off.

Used by :class:`producer.dispatch.RedisBackend`: a connection error waits (back-off, at most
``timeout_s``) until Redis answers again and lets the caller re-send what Redis may have lost; a
write refused at ``maxmemory`` waits, bounded the same way, for room.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from producer.backend import StalledError

#: Reconnect back-off: first wait, factor, longest wait (seconds); the whole wait is bounded by --timeout.
RECONNECT_FIRST_S = 0.1
RECONNECT_FACTOR = 2.0
RECONNECT_MAX_S = 2.0


def out_of_memory(exc: BaseException) -> bool:
    """True for Redis refusing a write at ``maxmemory`` (``OOM command not allowed ...``)."""
    import redis

    return isinstance(exc, redis.exceptions.OutOfMemoryError) or "maxmemory" in str(exc)


def call(fn: Callable[[], Any], *, timeout_s: float, reconnect: Callable[[Exception], None]) -> Any:
    """``fn()``; on ConnectionError/TimeoutError call ``reconnect(exc)`` and try again; while Redis
    refuses writes for lack of memory, wait with back-off, for at most ``timeout_s`` in all
    (then :class:`StalledError`)."""
    import redis

    full_since, delay = None, RECONNECT_FIRST_S
    while True:
        try:
            try:
                return fn()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                reconnect(exc)
        except redis.ResponseError as exc:
            if not out_of_memory(exc):
                raise
            now = time.monotonic()
            full_since = now if full_since is None else full_since
            if now - full_since > timeout_s:
                raise StalledError(f"Redis refused writes for {timeout_s:g} s: out of memory (maxmemory "
                                   "reached; docs/pipeline.md, \"Redis memory\")") from None
            time.sleep(delay)
            delay = min(delay * RECONNECT_FACTOR, RECONNECT_MAX_S)


def wait_for_redis(conn: Any, first: Exception, *, timeout_s: float, recover: Callable[[], None],
                   since: float | None = None) -> None:
    """Ping ``conn`` with back-off until it answers and ``recover()`` has run without a connection
    error; :class:`StalledError` naming the last error ``timeout_s`` after ``since`` (when Redis was
    first found gone, by this or another client of the call; default: now)."""
    import redis

    deadline = (time.monotonic() if since is None else since) + timeout_s
    delay, last = RECONNECT_FIRST_S, first
    while True:
        if time.monotonic() > deadline:
            raise StalledError(f"Redis unreachable for {timeout_s:g} s: {last}", redis_down=True)
        time.sleep(delay)
        delay = min(delay * RECONNECT_FACTOR, RECONNECT_MAX_S)
        try:
            conn.ping()
            recover()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            last = exc
            continue
        return
