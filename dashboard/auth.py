"""Login for the dashboard: one shared token (``SER_DASHBOARD_TOKEN``).

The token is entered once on a login form; the browser then holds a session cookie (HttpOnly,
SameSite=Strict, Secure over https) whose value is an HMAC of the token, so it survives a
dashboard restart and changes when the token changes, and the token itself is never stored in
the browser. Scripts may send ``Authorization: Bearer <token>`` instead. Every comparison is
constant-time (:func:`hmac.compare_digest`). Without a token configured there is no login and
the CLI refuses any address but loopback. A client address that presented a wrong token
:data:`~dashboard.settings.LOGIN_FAILURES` times within :data:`~dashboard.settings.LOGIN_WINDOW_S`
gets 429 (``Retry-After``) for every request that needs the login, right token or not, until
its oldest failure leaves the window (:class:`FailureLimiter`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict, deque
from collections.abc import Callable

#: What the session cookie's HMAC signs (the key is the token).
SESSION_MESSAGE = b"ser-dashboard-session-v1"


def session_value(token: str) -> str:
    return hmac.new(token.encode(), SESSION_MESSAGE, hashlib.sha256).hexdigest()


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def authorised(*, token: str | None, cookie: str | None, authorization: str | None) -> bool:
    """True when no token is configured, or the cookie or a bearer header carries it."""
    if token is None:
        return True
    if cookie is not None and hmac.compare_digest(cookie.encode(), session_value(token).encode()):
        return True
    if authorization and authorization[:7].lower() == "bearer ":
        return token_matches(authorization[7:].strip(), token)
    return False


def safe_next(target: str | None) -> str:
    """A local path to go to after login (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class FailureLimiter:
    """Failed logins per client address in a sliding window (in memory, per process).

    ``max_failures`` failures within ``window_s`` seconds block the address until the oldest of them
    is ``window_s`` old. At most ``max_clients`` addresses are remembered (the least recently failed
    are forgotten first), so a flood of addresses cannot grow the table without bound."""

    def __init__(self, *, max_failures: int, window_s: float, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_failures < 1 or window_s <= 0 or max_clients < 1:
            raise ValueError(f"need max_failures >= 1, window_s > 0, max_clients >= 1; got {max_failures}, "
                             f"{window_s}, {max_clients}")
        self.max_failures, self.window_s, self.max_clients, self.clock = max_failures, window_s, max_clients, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        cutoff = self.clock() - self.window_s
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: not blocked)."""
        times = self._recent(client)
        if times is None or len(times) < self.max_failures:
            return 0.0
        return max(times[-self.max_failures] + self.window_s - self.clock(), 0.0)

    def failed(self, client: str) -> None:
        times = self._recent(client) or deque()
        times.append(self.clock())
        self._failures[client] = times
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
