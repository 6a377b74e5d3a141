"""The login: the gate in front of every page and stream (:class:`Gate`), and ``/login`` ``/logout``.

With a token configured a request needs the session cookie or ``Authorization: Bearer <token>``
(401 otherwise; a page's 401 body is the login form). Failed logins are counted per address
(:class:`dashboard.auth.FailureLimiter`): past the limit, 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from dashboard import pages
from dashboard.auth import authorised, safe_next, session_value, token_matches
from dashboard.resources import Resources
from dashboard.settings import COOKIE_NAME
from dashboard.web import Handler, harden


def client_of(request: Request) -> str:
    return request.client.host if request.client is not None else "?"


class Gate:
    def __init__(self, res: Resources) -> None:
        self.res = res

    def too_many(self, request: Request) -> Response | None:
        """429 while the request's address has failed too many logins (None: let it in)."""
        wait = self.res.limiter.retry_after(client_of(request)) if self.res.login else 0.0
        if not wait:
            return None
        return harden(PlainTextResponse("too many failed logins from this address; try again later\n",
                                        status_code=429, headers={"Retry-After": str(math.ceil(wait))}))

    def guard(self, handler: Handler, *, page: bool = True) -> Handler:
        """``handler`` behind the login (``page`` False: a stream, whose 401 is plain text)."""
        res = self.res

        async def wrapped(request: Request) -> Response:
            blocked = self.too_many(request)
            if blocked is not None:
                return blocked
            cookie, authorization = request.cookies.get(COOKIE_NAME), request.headers.get("authorization")
            if not authorised(token=res.token, cookie=cookie, authorization=authorization):
                if authorization is not None:  # a wrong bearer token (a stale cookie, e.g. after the token
                    res.limiter.failed(client_of(request))  # changed, is not counted: it is no guess)
                nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if page:
                    return harden(HTMLResponse(pages.login_page(next_path=safe_next(nxt)), status_code=401))
                return harden(PlainTextResponse("login required\n", status_code=401))
            return await handler(request)

        return wrapped


def routes(gate: Gate) -> list[Route]:
    res = gate.res

    async def login_form(request: Request) -> Response:
        return harden(HTMLResponse(pages.login_page(next_path=safe_next(request.query_params.get("next")))))

    async def login_post(request: Request) -> Response:
        body = (await request.body())[:4096].decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(body).items()}
        nxt = safe_next(form.get("next"))
        token = res.token
        if token is None:
            return RedirectResponse(nxt, status_code=303)
        blocked = gate.too_many(request)
        if blocked is not None:
            return blocked
        if not token_matches(form.get("token", ""), token):
            res.limiter.failed(client_of(request))
            return harden(HTMLResponse(pages.login_page(next_path=nxt, error="Wrong token."), status_code=401))
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(COOKIE_NAME, session_value(token), httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
        return harden(response)

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
        return harden(response)

    return [Route("/login", login_form, methods=["GET"]), Route("/login", login_post, methods=["POST"]),
            Route("/logout", logout, methods=["POST"])]
