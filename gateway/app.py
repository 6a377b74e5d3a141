"""The gateway's ASGI app (Starlette): ``GET /healthz /readyz /metrics``, ``WS /twilio /audiohook /stream``.

Every WebSocket route checks its credentials on the upgrade request, before accepting: a refused
upgrade gets HTTP 403 (Twilio) or 401 (AudioHook, the generic stream) and nothing reaches Redis.
A route without credentials configured refuses everyone (unless ``--insecure-no-auth``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway import audiohook, generic, twilio
from gateway.auth import ReplayGuard, SignatureError, audiohook_verify, bearer_ok, twilio_ok, twilio_url
from gateway.guard import ConnectionGuard, install_log_limits, protocols
from gateway.hub import Hub
from gateway.metrics import GatewayMetrics
from gateway.settings import MAX_WS_MESSAGE_BYTES, GatewaySettings

log = logging.getLogger("ser.gateway")


def route_credentials(settings: GatewaySettings) -> dict[str, bool]:
    """Which routes can authenticate anyone (False: the route refuses every connection)."""
    c = settings.credentials
    return {"twilio": c.twilio_auth_token is not None,
            "audiohook": c.audiohook_api_key is not None and c.audiohook_secret is not None,
            "stream": c.stream_token is not None}


async def deny(ws: WebSocket, status: int, why: str) -> None:
    try:
        await ws.send_denial_response(PlainTextResponse(why + "\n", status_code=status))
    except RuntimeError:  # a server without the denial-response extension: a plain 403
        await ws.close(code=1008)


def create_app(settings: GatewaySettings, *, connection: Any = None, aconnection: Any = None) -> Starlette:
    """The app; ``connection``/``aconnection`` (redis / redis.asyncio) are made from the URL when None
    and a URL is set; no URL: embedded (classify in-process, nothing written anywhere)."""
    creds = settings.credentials
    state: dict[str, Hub] = {}
    public_host = urlsplit(settings.public_url).netloc if settings.public_url else None
    replays = ReplayGuard()
    gauges = GatewayMetrics()
    guard = ConnectionGuard(max_connections=settings.max_connections, max_per_address=settings.max_per_address,
                            header_timeout_s=settings.header_timeout_s,
                            on_count=lambda why: gauges.guard.labels(why).inc())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        import redis
        import redis.asyncio

        sync, aio = connection, aconnection
        own = settings.redis_url is not None and sync is None
        if own:
            assert settings.redis_url is not None
            sock = min(max(settings.timeout_s, 1.5), 5.0)
            sync = redis.Redis.from_url(settings.redis_url, socket_timeout=sock, socket_connect_timeout=sock,
                                        socket_keepalive=True, max_connections=settings.threads + 8)
            aio = redis.asyncio.Redis.from_url(settings.redis_url, socket_connect_timeout=sock)
        hub = Hub(settings, connection=sync, aconnection=aio, metrics=gauges)
        hub.start()
        state["hub"] = hub
        try:
            yield
        finally:
            await hub.stop()
            if own:
                await aio.aclose()
                sync.close()

    def refuse(route: str, ws: WebSocket) -> str | None:
        """Why this upgrade is refused (None: let it in)."""
        if creds.insecure_no_auth:
            return None
        headers = {k.lower(): v for k, v in ws.headers.items()}
        host = public_host or headers.get("host", "")
        if route == "twilio":
            if creds.twilio_auth_token is None:
                return "no SER_TWILIO_AUTH_TOKEN configured"
            url = twilio_url(host=host, path=ws.url.path, query=ws.url.query)
            return None if twilio_ok(creds.twilio_auth_token, url=url, signature=headers.get("x-twilio-signature")) \
                else "bad or missing X-Twilio-Signature"
        if route == "audiohook":
            if creds.audiohook_api_key is None or creds.audiohook_secret is None:
                return "no SER_AUDIOHOOK_API_KEY/SER_AUDIOHOOK_CLIENT_SECRET configured"
            target = ws.url.path + (f"?{ws.url.query}" if ws.url.query else "")
            try:
                value, until = audiohook_verify(api_key=creds.audiohook_api_key, secret=creds.audiohook_secret,
                                                headers=headers, request_target=target, authority=host)
            except SignatureError as exc:
                return str(exc)
            return replays.admit(value, until)
        if creds.stream_token is None:
            return "no SER_GATEWAY_TOKEN configured"
        return None if bearer_ok(creds.stream_token, headers.get("authorization")) else "bad or missing bearer token"

    async def guarded(route: str, ws: WebSocket, status: int) -> bool:
        hub = state["hub"]
        why = refuse(route, ws)
        if why is not None:
            hub.metrics.connections.labels(route, "refused").inc()
            log.warning("%s: refused a connection from %s: %s", route, ws.client.host if ws.client else "?", why)
            await deny(ws, status, "unauthorized" if status == 401 else "forbidden")
            return False
        hub.metrics.connections.labels(route, "accepted").inc()
        return True

    async def ws_twilio(ws: WebSocket) -> None:
        if await guarded("twilio", ws, 403):
            await ws.accept()
            await twilio.serve(ws, state["hub"])

    async def ws_audiohook(ws: WebSocket) -> None:
        if await guarded("audiohook", ws, 401):
            await ws.accept()
            await audiohook.serve(ws, state["hub"], ws.headers.get("audiohook-session-id", ""))

    async def ws_stream(ws: WebSocket) -> None:
        if await guarded("stream", ws, 401):
            await ws.accept()
            await generic.serve(ws, state["hub"])

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        hub = state["hub"]
        if hub.aconnection is not None:
            try:
                await hub.aconnection.ping()
            except Exception as exc:
                return PlainTextResponse(f"Redis unreachable: {type(exc).__name__}\n", status_code=503)
        return PlainTextResponse(f"ready: {len(hub.live)} live call(s), model {hub.spec.model_id}\n")

    async def metrics(request: Request) -> Response:
        return Response(state["hub"].metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        WebSocketRoute("/twilio", ws_twilio),
        WebSocketRoute("/audiohook", ws_audiohook),
        WebSocketRoute("/stream", ws_stream),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.guard = guard
    return app


def server_config(app: Starlette, *, host: str, port: int, log_level: str = "info", graceful_s: float = 5) -> Any:
    """The ``uvicorn.Config`` serving ``app`` (the CLI and the tests use the same): the connection
    guard's protocol classes (gateway.guard), the WebSocket message limit, rate-limited error logs."""
    import uvicorn

    http, ws = protocols(app.state.guard)
    install_log_limits()
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=http, ws=ws,
                          ws_max_size=MAX_WS_MESSAGE_BYTES, timeout_graceful_shutdown=int(graceful_s),
                          access_log=False)
