"""The dashboard's ASGI app (Starlette): pages, Server-Sent Events, login.

Routes: ``/`` overview, ``/calls/<id>`` a call, ``/sse/overview`` and ``/sse/call?id=`` live
updates, ``/history`` and ``/trends`` (the call archive, with ``--archive``; 404 without it),
``/login`` ``/logout``, ``/static/*``, ``/healthz``. Every page and stream needs the
login when a token is configured (401 otherwise; a page's 401 body is the login form).
A call no longer in Redis is served from the archive (:mod:`dashboard.archived`), same rendering.

SSE: each message has ``id:`` = the stream position after it (overview: the ``ser:events``
entry id; a call: ``<results id> <events id>``), so a browser that reconnects (``Last-Event-ID``,
after a network drop or a dashboard restart) resumes exactly where it stopped: no gap, no
duplicate. While Redis cannot be read a stream sends ``down`` (then ``up``) and retries once a
second; pages answer 503. A stream waits in one blocking XREAD of up to :data:`~dashboard.settings.SSE_BLOCK_MS`;
pool health and the live calls' heartbeats (``alive``: when each producer was last heard of, and
which calls are lost) are sent every :data:`~dashboard.settings.HEALTH_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dashboard import history, pages, trends
from dashboard.archived import Archive
from dashboard.auth import FailureLimiter, authorised, safe_next, session_value, token_matches
from dashboard.history import Query
from dashboard.settings import (
    COOKIE_NAME,
    HEALTH_EVERY_S,
    KEEPALIVE_S,
    LOGIN_FAILURES,
    LOGIN_WINDOW_S,
    SSE_BLOCK_MS,
    SSE_RETRY_MS,
    DashboardSettings,
)
from dashboard.store import START, Store

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Default labels for colours on the overview (the shipped model's); calls bring their own.
OVERVIEW_LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
_STREAM_ID = re.compile(r"^\d+-\d+$")
Handler = Callable[[Request], Awaitable[Response]]


def _csp(nonce: str = "") -> str:
    script = "'self'" + (f" 'nonce-{nonce}'" if nonce else "")
    return (f"default-src 'none'; script-src {script}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _harden(response: Response, nonce: str = "") -> Response:
    response.headers["Content-Security-Policy"] = _csp(nonce)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _stream_id(value: str | None) -> str:
    return value if value and _STREAM_ID.match(value) else START


def _sse(event: str, data: Any, entry_id: str | None = None) -> str:
    head = f"id: {entry_id}\n" if entry_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)


def create_app(settings: DashboardSettings, *, client: Any = None, sync_client: Any = None,
               archive: Engine | None = None) -> Starlette:
    """The app; ``client``/``sync_client`` (redis.asyncio / redis) are made from the URL when None;
    ``archive``: the archive's engine (opened from ``settings.archive_url`` at start when None and a URL is set)."""
    token = settings.token
    login = token is not None
    state: dict[str, Any] = {}
    has_archive = archive is not None or settings.archive_url is not None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        import redis
        import redis.asyncio

        aclient = client or redis.asyncio.Redis.from_url(settings.redis_url)
        sclient = sync_client or redis.Redis.from_url(settings.redis_url)
        state["store"] = Store(aclient, queue=settings.queue, sync_client=sclient)
        engine = archive
        if engine is None and settings.archive_url is not None:
            from archive.db import open_engine

            engine = open_engine(settings.archive_url, migrate=False)
        state["archive"] = Archive(engine) if engine is not None else None
        try:
            yield
        finally:
            if engine is not None and archive is None:
                engine.dispose()
            if client is None:
                await aclient.aclose()
            if sync_client is None:
                sclient.close()

    limiter = FailureLimiter(max_failures=LOGIN_FAILURES, window_s=LOGIN_WINDOW_S)

    def client_of(request: Request) -> str:
        return request.client.host if request.client is not None else "?"

    def too_many(request: Request) -> Response | None:
        wait = limiter.retry_after(client_of(request)) if login else 0.0
        if not wait:
            return None
        return _harden(PlainTextResponse("too many failed logins from this address; try again later\n",
                                         status_code=429, headers={"Retry-After": str(math.ceil(wait))}))

    def guarded(handler: Handler, *, page: bool = True) -> Handler:
        async def wrapped(request: Request) -> Response:
            blocked = too_many(request)
            if blocked is not None:
                return blocked
            cookie, authorization = request.cookies.get(COOKIE_NAME), request.headers.get("authorization")
            if not authorised(token=token, cookie=cookie, authorization=authorization):
                if authorization is not None:  # a wrong bearer token (a stale cookie, e.g. after the token
                    limiter.failed(client_of(request))  # changed, is not counted: it is no guess)
                nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if page:
                    return _harden(HTMLResponse(pages.login_page(next_path=safe_next(nxt)), status_code=401))
                return _harden(PlainTextResponse("login required\n", status_code=401))
            return await handler(request)

        return wrapped

    async def overview(request: Request) -> Response:
        snapshot = await state["store"].overview()
        return _harden(HTMLResponse(pages.overview_page(snapshot, labels=OVERVIEW_LABELS, login=login,
                                                        archive=has_archive)))

    async def call(request: Request) -> Response:
        call_id = request.path_params["call_id"]
        arch: Archive | None = state["archive"]
        try:
            data = await state["store"].call(call_id)
        except _redis_errors():
            if arch is None:
                raise
            data = None  # Redis away: an archived call can still be shown
        if data is None and arch is not None:
            data = await arch.call(call_id)
        if data is None:
            return _harden(HTMLResponse(pages.not_found_page(call_id, archive=arch is not None), status_code=404))
        nonce = secrets.token_urlsafe(16)
        return _harden(HTMLResponse(pages.call_page(call_id, data, nonce=nonce, login=login, archive=has_archive)),
                       nonce)

    def no_archive() -> Response:
        return _harden(PlainTextResponse(history.NO_ARCHIVE, status_code=404))

    def archive_route(read: Callable[..., Query], fetch: Callable[[Archive, Query], Awaitable[Any]],
                      render: Callable[..., str]) -> Handler:
        """A page over the archive: the query string read (``read``), the archive asked (``fetch``) unless
        a value is invalid (400, the form and the message), the page rendered (``render``)."""
        async def route(request: Request) -> Response:
            arch: Archive | None = state["archive"]
            if arch is None:
                return no_archive()
            q = read(request.query_params)
            got = await fetch(arch, q) if q.flt is not None and not q.error else None
            return _harden(HTMLResponse(render(q, got, login=login), status_code=400 if q.error else 200))

        return route

    def sse_response(gen: AsyncIterator[str]) -> Response:
        return _harden(StreamingResponse(gen, media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}))

    async def sse_overview(request: Request) -> Response:
        store = state["store"]
        last = _stream_id(request.headers.get("last-event-id") or request.query_params.get("last"))

        async def gen() -> AsyncIterator[str]:
            nonlocal last
            yield f"retry: {SSE_RETRY_MS}\n\n"
            down = False
            next_health = 0.0
            quiet_since = time.monotonic()
            while True:
                try:
                    got = await store.read_events(last, block_ms=SSE_BLOCK_MS)
                except _redis_errors() as exc:
                    down = True
                    yield _sse("down", {"error": f"Redis: {type(exc).__name__}"})
                    await asyncio.sleep(SSE_RETRY_MS / 1000)
                    continue
                if down:
                    down = False
                    yield _sse("up", {})
                for entry_id, event in got:
                    last = entry_id
                    yield _sse("ev", event, entry_id)
                    quiet_since = time.monotonic()
                now = time.monotonic()
                if now >= next_health:
                    yield _sse("pool", await run_in_threadpool(store.pool))
                    try:
                        beats = await store.heartbeats()
                    except _redis_errors():  # the next read says "down"
                        beats = None
                    if beats is not None:
                        yield _sse("alive", beats)
                    next_health = now + HEALTH_EVERY_S
                    quiet_since = now
                elif now - quiet_since >= KEEPALIVE_S:
                    yield ": keep-alive\n\n"
                    quiet_since = now

        return sse_response(gen())

    async def sse_call(request: Request) -> Response:
        store = state["store"]
        call_id = request.query_params.get("id", "")
        resume = (request.headers.get("last-event-id") or "").split(" ")
        if len(resume) == 2:
            rid, eid = _stream_id(resume[0]), _stream_id(resume[1])
        else:
            rid, eid = _stream_id(request.query_params.get("r")), _stream_id(request.query_params.get("e"))

        async def gen() -> AsyncIterator[str]:
            nonlocal rid, eid
            yield f"retry: {SSE_RETRY_MS}\n\n"
            down = False
            quiet_since = time.monotonic()
            while True:
                try:
                    got = await store.read_call(call_id, rid, eid, block_ms=SSE_BLOCK_MS)
                except _redis_errors() as exc:
                    down = True
                    yield _sse("down", {"error": f"Redis: {type(exc).__name__}"})
                    await asyncio.sleep(SSE_RETRY_MS / 1000)
                    continue
                if down:
                    down = False
                    yield _sse("up", {})
                for which, entry_id, payload in got:
                    if which == "r":
                        rid = entry_id
                    else:
                        eid = entry_id
                    yield _sse("record" if which == "r" else "ev", payload, f"{rid} {eid}")
                if got:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= KEEPALIVE_S:
                    yield ": keep-alive\n\n"
                    quiet_since = time.monotonic()

        return sse_response(gen())

    async def login_form(request: Request) -> Response:
        return _harden(HTMLResponse(pages.login_page(next_path=safe_next(request.query_params.get("next")))))

    async def login_post(request: Request) -> Response:
        body = (await request.body())[:4096].decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(body).items()}
        nxt = safe_next(form.get("next"))
        if token is None:
            return RedirectResponse(nxt, status_code=303)
        blocked = too_many(request)
        if blocked is not None:
            return blocked
        if not token_matches(form.get("token", ""), token):
            limiter.failed(client_of(request))
            return _harden(HTMLResponse(pages.login_page(next_path=nxt, error="Wrong token."), status_code=401))
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(COOKIE_NAME, session_value(token), httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
        return _harden(response)

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
        return _harden(response)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def redis_down(request: Request, exc: Exception) -> Response:
        return _harden(HTMLResponse(pages.unavailable_page(f"Redis cannot be read ({type(exc).__name__}); "
                                                           "reload in a moment."), status_code=503))

    routes = [
        Route("/", guarded(overview)),
        Route("/calls/{call_id:path}", guarded(call)),
        Route("/history", guarded(archive_route(history.read_history, Archive.history, history.history_page))),
        Route("/trends", guarded(archive_route(trends.read_trends, Archive.trends_of, trends.trends_page))),
        Route("/sse/overview", guarded(sse_overview, page=False)),
        Route("/sse/call", guarded(sse_call, page=False)),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    import redis
    from sqlalchemy.exc import SQLAlchemyError

    async def archive_down(request: Request, exc: Exception) -> Response:
        return _harden(HTMLResponse(pages.unavailable_page(f"The call archive cannot be read ({type(exc).__name__});"
                                                           " reload in a moment."), status_code=503))

    handlers: dict[Any, Any] = {redis.RedisError: redis_down, ConnectionError: redis_down,
                                SQLAlchemyError: archive_down}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
