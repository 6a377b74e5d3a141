"""Live updates over Server-Sent Events: ``/sse/overview`` (every call's events, pool health, the
live calls' heartbeats) and ``/sse/call?id=`` (one call's records and events).

Each message has ``id:`` = the stream position after it (overview: the ``ser:events`` entry id; a
call: ``<results id> <events id>``), so a browser that reconnects (``Last-Event-ID``) resumes exactly
where it stopped. While Redis cannot be read a stream sends ``down`` (then ``up``) and retries once a
second. A stream waits in one blocking XREAD of up to :data:`~dashboard.settings.SSE_BLOCK_MS`; pool
health and heartbeats are sent every :data:`~dashboard.settings.HEALTH_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dashboard.login import Gate
from dashboard.settings import HEALTH_EVERY_S, KEEPALIVE_S, SSE_BLOCK_MS, SSE_RETRY_MS
from dashboard.store import Store
from dashboard.web import redis_errors, sse, sse_response, stream_id

T = TypeVar("T")


async def reads(read: Callable[[], Awaitable[list[T]]]) -> AsyncGenerator[str | list[T], None]:
    """``read()``'s batches, one per call, forever; each failed read (Redis cannot be read) yields a
    ``down`` message instead and is tried again after ``SSE_RETRY_MS``; the first read after that
    yields ``up`` before its batch."""
    down = False
    while True:
        try:
            got = await read()
        except redis_errors() as exc:
            down = True
            yield sse("down", {"error": f"Redis: {type(exc).__name__}"})
            await asyncio.sleep(SSE_RETRY_MS / 1000)
            continue
        if down:
            down = False
            yield sse("up", {})
        yield got


async def overview_events(store: Store, last: str) -> AsyncIterator[str]:
    """Every call's events after ``last``, with pool health and heartbeats, until the client leaves."""
    yield f"retry: {SSE_RETRY_MS}\n\n"
    next_health = 0.0
    quiet_since = time.monotonic()
    async with aclosing(reads(lambda: store.read_events(last, block_ms=SSE_BLOCK_MS))) as batches:
        async for got in batches:
            if isinstance(got, str):
                yield got
                continue
            for entry_id, event in got:
                last = entry_id
                yield sse("ev", event, entry_id)
                quiet_since = time.monotonic()
            now = time.monotonic()
            if now >= next_health:
                yield sse("pool", await run_in_threadpool(store.pool))
                try:
                    beats = await store.heartbeats()
                except redis_errors():  # the next read says "down"
                    beats = None
                if beats is not None:
                    yield sse("alive", beats)
                next_health = now + HEALTH_EVERY_S
                quiet_since = now
            elif now - quiet_since >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                quiet_since = now


async def call_events(store: Store, call_id: str, rid: str, eid: str) -> AsyncIterator[str]:
    """One call's records (after results id ``rid``) and events (after ``eid``), until the client leaves."""
    yield f"retry: {SSE_RETRY_MS}\n\n"
    quiet_since = time.monotonic()
    async with aclosing(reads(lambda: store.read_call(call_id, rid, eid, block_ms=SSE_BLOCK_MS))) as batches:
        async for got in batches:
            if isinstance(got, str):
                yield got
                continue
            for which, entry_id, payload in got:
                if which == "r":
                    rid = entry_id
                else:
                    eid = entry_id
                yield sse("record" if which == "r" else "ev", payload, f"{rid} {eid}")
            if got:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()


def routes(gate: Gate) -> list[Route]:
    res = gate.res

    async def sse_overview(request: Request) -> Response:
        last = stream_id(request.headers.get("last-event-id") or request.query_params.get("last"))
        return sse_response(overview_events(res.the_store(), last))

    async def sse_call(request: Request) -> Response:
        resume = (request.headers.get("last-event-id") or "").split(" ")
        if len(resume) == 2:
            rid, eid = stream_id(resume[0]), stream_id(resume[1])
        else:
            rid, eid = stream_id(request.query_params.get("r")), stream_id(request.query_params.get("e"))
        return sse_response(call_events(res.the_store(), request.query_params.get("id", ""), rid, eid))

    return [Route("/sse/overview", gate.guard(sse_overview, page=False)),
            Route("/sse/call", gate.guard(sse_call, page=False))]
