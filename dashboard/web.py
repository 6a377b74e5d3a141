"""What every dashboard response shares: security headers, Server-Sent Events framing, Redis errors.

:func:`harden` sets the Content-Security-Policy (with the page's script nonce, if any) and the other
headers on every response; :func:`sse` frames one event (``id:`` = the stream position after it).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dashboard.store import START

Handler = Callable[[Request], Awaitable[Response]]
_STREAM_ID = re.compile(r"^\d+-\d+$")


def csp(nonce: str = "") -> str:
    script = "'self'" + (f" 'nonce-{nonce}'" if nonce else "")
    return (f"default-src 'none'; script-src {script}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def harden(response: Response, nonce: str = "") -> Response:
    response.headers["Content-Security-Policy"] = csp(nonce)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def stream_id(value: str | None) -> str:
    """A Redis stream entry id from a request (``Last-Event-ID``, a query value), else the start."""
    return value if value and _STREAM_ID.match(value) else START


def sse(event: str, data: Any, entry_id: str | None = None) -> str:
    head = f"id: {entry_id}\n" if entry_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def sse_response(gen: AsyncIterator[str]) -> Response:
    return harden(StreamingResponse(gen, media_type="text/event-stream",
                                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}))


def redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)
