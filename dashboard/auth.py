"""Login for the dashboard: one shared token (``SER_DASHBOARD_TOKEN``).

The token is entered once on a login form; the browser then holds a session cookie (HttpOnly,
SameSite=Strict, Secure over https) whose value is an HMAC of the token, so it survives a
dashboard restart and changes when the token changes, and the token itself is never stored in
the browser. Scripts may send ``Authorization: Bearer <token>`` instead. Every comparison is
constant-time (:func:`hmac.compare_digest`). Without a token configured there is no login and
the CLI refuses any address but loopback.
"""

from __future__ import annotations

import hashlib
import hmac

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
