"""The dashboard's pages: ``/`` the overview, ``/calls/<id>`` a call (from Redis, else the archive:
:mod:`dashboard.archived`, same rendering), ``/history`` and ``/trends`` (the call archive, with
``--archive``; 404 without it). All behind the login (:class:`dashboard.login.Gate`).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from dashboard import history, pages, trends
from dashboard.archived import Archive
from dashboard.history import Query
from dashboard.login import Gate
from dashboard.web import Handler, harden, redis_errors

#: Default labels for colours on the overview (the shipped model's); calls bring their own.
OVERVIEW_LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def routes(gate: Gate) -> list[Route]:
    res = gate.res

    async def overview(request: Request) -> Response:
        snapshot = await res.the_store().overview()
        return harden(HTMLResponse(pages.overview_page(snapshot, labels=OVERVIEW_LABELS, login=res.login,
                                                       archive=res.has_archive)))

    async def call(request: Request) -> Response:
        call_id = request.path_params["call_id"]
        arch = res.archive
        try:
            data = await res.the_store().call(call_id)
        except redis_errors():
            if arch is None:
                raise
            data = None  # Redis away: an archived call can still be shown
        if data is None and arch is not None:
            data = await arch.call(call_id)
        if data is None:
            return harden(HTMLResponse(pages.not_found_page(call_id, archive=arch is not None), status_code=404))
        nonce = secrets.token_urlsafe(16)
        return harden(HTMLResponse(pages.call_page(call_id, data, nonce=nonce, login=res.login,
                                                   archive=res.has_archive)), nonce)

    def archive_route(read: Callable[..., Query], fetch: Callable[[Archive, Query], Awaitable[Any]],
                      render: Callable[..., str]) -> Handler:
        """A page over the archive: the query string read (``read``), the archive asked (``fetch``) unless
        a value is invalid (400, the form and the message), the page rendered (``render``)."""
        async def route(request: Request) -> Response:
            arch = res.archive
            if arch is None:
                return harden(PlainTextResponse(history.NO_ARCHIVE, status_code=404))
            q = read(request.query_params)
            got = await fetch(arch, q) if q.flt is not None and not q.error else None
            return harden(HTMLResponse(render(q, got, login=res.login), status_code=400 if q.error else 200))

        return route

    return [
        Route("/", gate.guard(overview)),
        Route("/calls/{call_id:path}", gate.guard(call)),
        Route("/history", gate.guard(archive_route(history.read_history, Archive.history, history.history_page))),
        Route("/trends", gate.guard(archive_route(trends.read_trends, Archive.trends_of, trends.trends_page))),
    ]
