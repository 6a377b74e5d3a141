"""The dashboard's per-process resources, set up once at start (the app's lifespan) and handed to
every route group: the Redis store, the archive (``--archive``; None without), the login settings.

Route handlers read :attr:`Resources.store` and :attr:`Resources.archive` when a request comes (they
exist once the app has started).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from starlette.applications import Starlette

from dashboard.archived import Archive
from dashboard.auth import FailureLimiter
from dashboard.settings import LOGIN_FAILURES, LOGIN_WINDOW_S, DashboardSettings
from dashboard.store import Store


@dataclass
class Resources:
    settings: DashboardSettings
    #: The archive is configured (an engine given or a URL set): pages link to it.
    has_archive: bool
    limiter: FailureLimiter = field(
        default_factory=lambda: FailureLimiter(max_failures=LOGIN_FAILURES, window_s=LOGIN_WINDOW_S))
    store: Store | None = None
    archive: Archive | None = None

    @property
    def token(self) -> str | None:
        return self.settings.token

    @property
    def login(self) -> bool:
        return self.settings.token is not None

    def the_store(self) -> Store:
        assert self.store is not None, "the app has not started"
        return self.store


def lifespan(res: Resources, *, client: Any = None, sync_client: Any = None,
             archive: Engine | None = None) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """Opens the Redis clients (made from the URL when None) and the archive (opened from
    ``settings.archive_url`` when no engine is given and a URL is set) into ``res``; closes what it opened."""
    settings = res.settings

    @asynccontextmanager
    async def span(app: Starlette) -> AsyncIterator[None]:
        import redis
        import redis.asyncio

        aclient = client or redis.asyncio.Redis.from_url(settings.redis_url)
        sclient = sync_client or redis.Redis.from_url(settings.redis_url)
        res.store = Store(aclient, queue=settings.queue, sync_client=sclient)
        engine = archive
        if engine is None and settings.archive_url is not None:
            from archive.db import open_engine

            engine = open_engine(settings.archive_url, migrate=False)
        res.archive = Archive(engine) if engine is not None else None
        try:
            yield
        finally:
            if engine is not None and archive is None:
                engine.dispose()
            if client is None:
                await aclient.aclose()
            if sync_client is None:
                sclient.close()

    return span
