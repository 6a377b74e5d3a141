"""The dashboard's ASGI app (Starlette), assembled from its parts.

Routes: ``/`` overview, ``/calls/<id>`` a call, ``/history`` and ``/trends`` (:mod:`dashboard.views`);
``/sse/overview`` and ``/sse/call?id=`` live updates (:mod:`dashboard.live`); ``/login`` ``/logout``
(:mod:`dashboard.login`, whose gate guards every page and stream); ``/static/*``, ``/healthz``.
The per-process resources (Redis store, archive, login limiter: :mod:`dashboard.resources`) are set up
once at start and handed to each route group. While Redis (or the archive) cannot be read, pages
answer 503.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dashboard import live, login, pages, views
from dashboard.resources import Resources, lifespan
from dashboard.settings import DashboardSettings
from dashboard.web import harden

STATIC_DIR = Path(__file__).resolve().parent / "static"


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def redis_down(request: Request, exc: Exception) -> Response:
    return harden(HTMLResponse(pages.unavailable_page(f"Redis cannot be read ({type(exc).__name__}); "
                                                      "reload in a moment."), status_code=503))


async def archive_down(request: Request, exc: Exception) -> Response:
    return harden(HTMLResponse(pages.unavailable_page(f"The call archive cannot be read ({type(exc).__name__});"
                                                      " reload in a moment."), status_code=503))


def create_app(settings: DashboardSettings, *, client: Any = None, sync_client: Any = None,
               archive: Engine | None = None) -> Starlette:
    """The app; ``client``/``sync_client`` (redis.asyncio / redis) are made from the URL when None;
    ``archive``: the archive's engine (opened from ``settings.archive_url`` at start when None and a URL is set)."""
    import redis
    from sqlalchemy.exc import SQLAlchemyError

    res = Resources(settings, has_archive=archive is not None or settings.archive_url is not None)
    gate = login.Gate(res)
    routes = [*views.routes(gate), *live.routes(gate), *login.routes(gate), Route("/healthz", healthz),
              Mount("/static", StaticFiles(directory=STATIC_DIR), name="static")]
    handlers: dict[Any, Any] = {redis.RedisError: redis_down, ConnectionError: redis_down,
                                SQLAlchemyError: archive_down}
    return Starlette(routes=routes, lifespan=lifespan(res, client=client, sync_client=sync_client, archive=archive),
                     exception_handlers=handlers)
