"""Frozen settings of one ``ser-dashboard`` process (built by :mod:`dashboard.cli` from options/env)."""

from __future__ import annotations

from dataclasses import dataclass

from workers.contract import DEFAULT_QUEUE

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
#: Hosts that count as loopback (the only ones allowed without a token).
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
#: One blocking XREAD waits this long (ms): a live page hears of new entries at once, and nothing
#: asks Redis more often than once a second while a call is quiet.
SSE_BLOCK_MS = 1000
#: Seconds between pool-health updates on the overview (one ``pool_status`` per process per period).
HEALTH_EVERY_S = 2.0
#: Seconds between SSE keep-alive comments.
KEEPALIVE_S = 15.0
#: Browsers reconnect this many ms after a dropped SSE connection (sent as ``retry:``).
SSE_RETRY_MS = 1000
#: Recently ended calls listed on the overview.
ENDED_SHOWN = 50
#: A client address that presents a wrong token this many times within LOGIN_WINDOW_S seconds is
#: refused (429) until the oldest of those failures is LOGIN_WINDOW_S old. Tokens are at least 16
#: characters, so this is about log noise and load more than guessing; behind a reverse proxy every
#: client shares the proxy's address.
LOGIN_FAILURES = 10
LOGIN_WINDOW_S = 300.0
#: Name of the session cookie (HttpOnly, SameSite=Strict).
COOKIE_NAME = "ser_dashboard"
#: The History page's default time range (days back from today, UTC, today included) and rows per page
#: (``limit`` in the query string changes it, up to HISTORY_MAX_LIMIT).
HISTORY_DAYS = 7
HISTORY_PAGE_SIZE = 50
HISTORY_MAX_LIMIT = 500
#: The Trends page's default time range (days) and the most groups (agents, queues...) drawn as lines.
TRENDS_DAYS = 28
TRENDS_MAX_LINES = 8


@dataclass(frozen=True)
class DashboardSettings:
    redis_url: str = DEFAULT_REDIS_URL
    queue: str = DEFAULT_QUEUE
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None  # SER_DASHBOARD_TOKEN; None: no login (loopback only)
    archive_url: str | None = None  # --archive / SER_ARCHIVE_URL; None: no History/Trends, Redis only
