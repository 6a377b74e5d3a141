"""Bounded resources before authentication: what a TCP connection may hold before it has sent a
whole request (docs/gateway.md, "Limits").

:class:`ConnectionGuard` admits a new connection only while the process holds fewer than
``max_connections`` and its source address fewer than ``max_per_address`` (0: no per-address
limit); a refused one gets ``HTTP/1.1 503`` with a one-line reason and is closed at once. A
connection that has not sent a complete request head within ``header_timeout_s`` is closed (408).
Counting covers a connection's whole life, its WebSocket included (:func:`protocols` wraps both of
uvicorn's protocol classes). Refusals are counted in ``ser_gateway_refused_sockets_total{why}`` and
logged as one summary line per :data:`LOG_EVERY_S`, never one line per connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ser.gateway.guard")
#: Seconds between two summary lines of refused or dropped connections.
LOG_EVERY_S = 10.0
WHY = {"process": "the process's connection limit", "address": "the per-address connection limit",
       "header_timeout": "no complete request head in time"}


class ConnectionGuard:
    def __init__(self, *, max_connections: int, max_per_address: int, header_timeout_s: float,
                 on_count: Callable[[str], None] | None = None, log_every_s: float = LOG_EVERY_S) -> None:
        self.max_connections, self.max_per_address = max_connections, max_per_address
        self.header_timeout_s, self.log_every_s = header_timeout_s, log_every_s
        self.on_count = on_count or (lambda why: None)
        self.by_address: dict[str, set[Any]] = {}
        self.total = 0
        self.counts: Counter[str] = Counter()  # since the last summary line
        self._logged_at = -float("inf")
        self._flush: asyncio.TimerHandle | None = None

    def _prune(self) -> None:
        """Forget transports that closed without telling us (a safety net; release() is the rule)."""
        for addr, transports in list(self.by_address.items()):
            for t in [t for t in transports if t.is_closing()]:
                self.release(addr, t)

    def admit(self, addr: str, transport: Any) -> str | None:
        """Count a new connection from ``addr``; None: admitted, else the reason it is refused."""
        if self.total >= self.max_connections or (
                self.max_per_address and len(self.by_address.get(addr, ())) >= self.max_per_address):
            self._prune()
        if self.total >= self.max_connections:
            return "process"
        if self.max_per_address and len(self.by_address.get(addr, ())) >= self.max_per_address:
            return "address"
        self.by_address.setdefault(addr, set()).add(transport)
        self.total += 1
        return None

    def release(self, addr: str, transport: Any) -> None:
        transports = self.by_address.get(addr)
        if transports is not None and transport in transports:
            transports.discard(transport)
            self.total -= 1
            if not transports:
                del self.by_address[addr]

    def count(self, why: str) -> None:
        """One refused or dropped connection: the metric now, the log line at most every log_every_s."""
        self.counts[why] += 1
        self.on_count(why)
        if self._flush is None:
            wait = max(0.0, self._logged_at + self.log_every_s - time.monotonic())
            self._flush = asyncio.get_running_loop().call_later(wait, self.summary)

    def summary(self) -> None:
        self._flush = None
        self._logged_at = time.monotonic()
        if self.counts:
            parts = ", ".join(f"{n} ({WHY.get(why, why)})" for why, n in sorted(self.counts.items()))
            log.warning("connections refused or dropped before a request: %s; open now: %d from %d address(es)",
                        parts, self.total, len(self.by_address))
            self.counts.clear()


def _refusal(status: str, why: str) -> bytes:
    body = f"{why}\n".encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


def protocols(guard: ConnectionGuard) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """uvicorn's HTTP and WebSocket protocol classes, guarded: ``(http, ws)`` for ``uvicorn.Config``."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    def address(transport: Any) -> str:
        peer = transport.get_extra_info("peername")
        return str(peer[0]) if isinstance(peer, tuple) and peer else "?"

    class GuardedHTTP(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            self._guard_addr = address(transport)
            self._guard_timer: asyncio.TimerHandle | None = None
            why = guard.admit(self._guard_addr, transport)
            self._guard_refused = why is not None
            if why is not None:
                transport.write(_refusal("503 Service Unavailable", f"too many connections ({WHY[why]})"))
                transport.close()
                guard.count(why)
                return
            super().connection_made(transport)
            self._guard_timer = asyncio.get_running_loop().call_later(guard.header_timeout_s, self._guard_expire)

        def _guard_expire(self) -> None:
            transport = self.transport
            if transport.get_protocol() is self and self.scope is None and not transport.is_closing():
                transport.write(_refusal("408 Request Timeout", "no complete request in time"))
                transport.close()
                guard.count("header_timeout")

        def data_received(self, data: bytes) -> None:
            if not self._guard_refused:
                super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._guard_timer is not None:
                self._guard_timer.cancel()
            if self._guard_refused:
                return
            guard.release(self._guard_addr, self.transport)
            super().connection_lost(exc)

    class GuardedWS(WebSocketsSansIOProtocol):
        def connection_made(self, transport: Any) -> None:
            self._guard_addr = address(transport)
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            guard.release(self._guard_addr, self.transport)
            super().connection_lost(exc)

    return GuardedHTTP, GuardedWS


class RateLimitFilter(logging.Filter):
    """Lets one record per message template through per ``every_s`` and says how many it held back
    (for asyncio's and uvicorn's per-connection error lines, e.g. ``socket.accept() out of system
    resource`` when file descriptors run out)."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{str(record.msg).split(chr(10), 1)[0]}"
        now = time.monotonic()
        if now - self._last.get(key, -float("inf")) < self.every_s:
            self._held[key] += 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {self.every_s:g} s not logged)"
        return True


def install_log_limits(every_s: float = LOG_EVERY_S) -> None:
    """Rate-limit the loggers that write one line per failed accept or broken connection."""
    for name in ("asyncio", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
            logger.addFilter(RateLimitFilter(every_s))
