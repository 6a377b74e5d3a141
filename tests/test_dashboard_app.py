"""ser-dashboard's app over real HTTP (uvicorn on loopback, raw sockets/urllib as clients) against
a real redis-server: login, 401s, security headers, escaping, SSE resume by Last-Event-ID.
The browser-level behaviour is in test_dashboard_browser.py."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import RedisServer, free_port

from callevents.rules import EventSettings, Rule
from callevents.schema import EVENTS_KEY, LOST_AFTER_S, call_key, events_key
from callevents.writer import CallEvents
from dashboard.auth import FailureLimiter, safe_next, session_value
from dashboard.cli import is_loopback
from dashboard.settings import COOKIE_NAME, LOGIN_FAILURES, LOGIN_WINDOW_S, DashboardSettings
from workers.contract import encode_entry, results_key

TOKEN = "app-test-token-0123456789"
EVIL = "<script>alert('x')</script>"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def request(url: str, *, data: bytes | None = None, **headers: str) -> tuple[int, dict[str, str], str]:
    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@contextmanager
def serve(redis_url: str, *, archive: Any = None) -> Iterator[str]:
    """The app on a free loopback port (``archive``: the call archive's engine, tests/test_dashboard_history.py)."""
    import uvicorn

    from dashboard.app import create_app

    port = free_port()
    settings = DashboardSettings(redis_url=redis_url, port=port, token=TOKEN)
    config = uvicorn.Config(create_app(settings, archive=archive), host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=1)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture
def server(redis_url: str) -> Iterator[str]:
    with serve(redis_url) as base:
        yield base


def sse(base: str, path: str, n: int, last_event_id: str | None = None, timeout: float = 10.0,
        kinds: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The first ``n`` messages (``{"id", "event", "data"}``) of an SSE stream that carry an id, or
    whose event is one of ``kinds``."""
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    out: list[dict[str, Any]] = []
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        head = f"GET {path} HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        if last_event_id is not None:
            head += f"Last-Event-ID: {last_event_id}\r\n"
        sock.sendall((head + "\r\n").encode())
        fh = sock.makefile("rb")
        status = fh.readline()
        assert b" 200 " in status, status
        while fh.readline().strip():
            pass
        msg: dict[str, Any] = {}
        while len(out) < n:
            line = fh.readline().decode().rstrip("\r\n")
            if line.startswith("id: "):
                msg["id"] = line[4:]
            elif line.startswith("event: "):
                msg["event"] = line[7:]
            elif line.startswith("data: "):
                msg["data"] = json.loads(line[6:])
            elif not line and msg:
                if "id" in msg or msg.get("event") in kinds:
                    out.append(msg)
                msg = {}
    return out


def rec(channel: str, seq: int, neg: float, **extra: Any) -> dict[str, Any]:
    return {"kind": "result", "stream_id": "c1", "channel": channel, "seq": seq, "start_s": 3.0 * seq,
            "end_s": 3.0 * seq + 3.0, "label": "angry" if neg > 0.5 else "neutral", "confidence": 0.8,
            "probs": {"neutral": 1 - neg, "angry": neg}, "model": "m@1", **extra}


def test_login_401_cookie_and_headers(server: str) -> None:
    for path in ("/", "/calls/c1", "/sse/overview", "/sse/call?id=c1"):
        code, _, body = request(server + path)
        assert code == 401, path
    code, headers, body = request(server + "/")
    assert 'action="/login"' in body and "content-security-policy" in headers
    code, _, body = request(server + "/login", data=b"token=wrong&next=/")
    assert code == 401 and "Wrong token" in body
    form = urllib.parse.urlencode({"token": TOKEN, "next": "//evil.example/"}).encode()
    code, headers, _ = request(server + "/login", data=form)
    assert code == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and TOKEN not in cookie
    assert cookie.startswith(f"{COOKIE_NAME}={session_value(TOKEN)};")
    code, headers, body = request(server + "/", Cookie=f"{COOKIE_NAME}={session_value(TOKEN)}")
    assert code == 200 and 'id="overview-data"' in body
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    assert request(server + "/", Cookie=f"{COOKIE_NAME}={session_value('another-token-0123456')}")[0] == 401
    assert request(server + "/healthz")[0] == 200
    # no external resources on any page
    assert "http://" not in body.replace(server, "") and "https://" not in body


def test_safe_next_and_loopback() -> None:
    assert [safe_next(x) for x in ("/calls/a", "//evil", "https://evil", "/\\evil", None)] == [
        "/calls/a", "/", "/", "/", "/"]
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.0.0.2") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.com")


def test_pages_escape_call_data(server: str, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    calls = CallEvents(client, call_id=EVIL, source="twilio", channels=["agent", "<i>customer</i>"],
                       params={"<k>": "<v onload=x>"})
    calls.start()
    client.xadd(results_key(EVIL), encode_entry({**rec("agent", 0, 0.9), "stream_id": EVIL, "uncertain": True}))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    _, _, overview = request(server + "/", **auth)
    _, headers, page = request(server + "/calls/" + urllib.parse.quote(EVIL, safe=""), **auth)
    for body in (overview, page):
        assert "<script>alert" not in body and "<i>customer" not in body and "<v onload" not in body
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page and "&lt;v onload=x&gt;" in page
    nonce = headers["content-security-policy"].split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in page
    data = json.loads(page.split('<script type="application/json" id="ser-data">')[1].split("</script>")[0])
    assert data["call_id"] == EVIL and data["segments"][0]["uncertain"] is True
    assert request(server + "/calls/nope", **auth)[0] == 404


def test_sse_resumes_from_last_event_id(server: str, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    calls = CallEvents(client, call_id="c1", source="file", channels=["agent", "customer"],
                       settings=EventSettings(rules=(Rule(window_s=3.0),), trend_every_s=3.0))
    calls.start()
    calls.add([rec("customer", 0, 0.9), rec("customer", 1, 0.1)])  # alert_opened, trend, alert_closed, trend
    ids = [i.decode() for i, _ in client.xrange(EVENTS_KEY)]
    assert len(ids) == 5
    first = sse(server, "/sse/overview", 5)
    assert [m["id"] for m in first] == ids and first[0]["data"]["kind"] == "call_started"
    resumed = sse(server, "/sse/overview", 3, last_event_id=ids[1])
    assert [m["id"] for m in resumed] == ids[2:]  # exactly what came after, nothing twice
    # A call page's stream: results and events, resumed from both positions.
    for i in range(3):
        client.xadd(results_key("c1"), encode_entry(rec("agent", i, 0.2)))
    rids = [i.decode() for i, _ in client.xrange(results_key("c1"))]
    eids = [i.decode() for i, _ in client.xrange(events_key("c1"))]
    got = sse(server, "/sse/call?id=c1", 2, last_event_id=f"{rids[0]} {eids[-1]}")
    assert [(m["event"], m["data"]["seq"]) for m in got] == [("record", 1), ("record", 2)]
    assert got[1]["id"] == f"{rids[2]} {eids[-1]}"
    calls.end(reason="completed", duration_s=6.0, summary={})
    tail = sse(server, "/sse/call?id=c1", 1, last_event_id=f"{rids[-1]} {eids[-1]}")
    assert tail[0]["event"] == "ev" and tail[0]["data"]["kind"] == "call_ended"
    # A malformed Last-Event-ID starts from the beginning rather than failing.
    assert sse(server, "/sse/call?id=c1", 1, last_event_id="garbage")[0]["data"]["kind"] in ("result", "call_started")


def test_redis_down_gives_503_and_the_stream_says_so(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as rs, serve(rs.url()) as base:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert request(base + "/", **auth)[0] == 200
        rs.stop()
        code, _, body = request(base + "/", **auth)
        assert code == 503 and "Redis cannot be read" in body
        down = sse(base, "/sse/overview", 1, kinds=("down",))
        assert down[0]["event"] == "down" and "Redis" in down[0]["data"]["error"]
        rs.start()
        assert request(base + "/", **auth)[0] == 200


def test_a_call_whose_heartbeat_stopped_is_shown_as_lost(server: str, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for call_id in ("gone", "quiet", "old"):
        CallEvents(client, call_id=call_id, source="stdin", channels=["customer"]).start()
    client.hset(call_key("gone"), "alive", time.time() - LOST_AFTER_S - 30)
    client.hdel(call_key("old"), "alive")  # written by a producer without heartbeats: never lost
    auth = {"Authorization": f"Bearer {TOKEN}"}
    _, _, body = request(server + "/", **auth)
    data = json.loads(body.split('id="overview-data">')[1].split("</script>")[0])
    assert sorted(c["call_id"] for c in data["active"]) == ["old", "quiet"]
    (lost,) = data["ended"]
    assert lost["call_id"] == "gone" and lost["ended"]["reason"] == "lost" and lost["ended"]["duration_s"] == 0.0
    _, _, page = request(server + "/calls/gone", **auth)
    assert "ENDED (lost)" in page
    got = sse(server, "/sse/overview", 4, kinds=("alive",))  # 3 x call_started, then the heartbeats
    (beat,) = [m["data"] for m in got if m.get("event") == "alive"]
    assert beat["lost"] == ["gone"] and set(beat["alive"]) == {"gone", "quiet"}
    # heard of again (its producer was only cut off from Redis): live again
    client.hset(call_key("gone"), "alive", time.time())
    _, _, body = request(server + "/", **auth)
    data = json.loads(body.split('id="overview-data">')[1].split("</script>")[0])
    assert sorted(c["call_id"] for c in data["active"]) == ["gone", "old", "quiet"] and data["ended"] == []


def test_failure_limiter_window_and_memory() -> None:
    now = [0.0]
    lim = FailureLimiter(max_failures=3, window_s=10.0, max_clients=2, clock=lambda: now[0])
    for t in (0.0, 1.0, 2.0):
        now[0] = t
        assert lim.retry_after("a") == 0.0
        lim.failed("a")
    assert lim.retry_after("a") == pytest.approx(8.0)  # until the failure at t=0 is 10 s old
    now[0] = 10.5
    assert lim.retry_after("a") == 0.0  # two failures left in the window
    lim.failed("a")
    assert lim.retry_after("a") == pytest.approx(0.5)
    lim.failed("b")
    lim.failed("c")  # a third address: the least recently failed ("a") is forgotten
    assert lim.retry_after("a") == 0.0
    with pytest.raises(ValueError, match="max_failures"):
        FailureLimiter(max_failures=0, window_s=1.0)


def test_repeated_wrong_tokens_from_one_address_get_429(server: str) -> None:
    stale = f"{COOKIE_NAME}={session_value('the-token-before-rotation')}"
    for _ in range(LOGIN_FAILURES + 1):  # a stale session cookie (the token changed) is no guess: not counted
        assert request(server + "/", Cookie=stale)[0] == 401
    for _ in range(LOGIN_FAILURES - 1):
        assert request(server + "/login", data=b"token=wrong-token-0123456789&next=/")[0] == 401
    assert request(server + "/", Authorization="Bearer also-wrong-0123456789")[0] == 401  # counted too
    code, headers, body = request(server + "/login", data=urllib.parse.urlencode({"token": TOKEN}).encode())
    assert code == 429 and 0 < int(headers["retry-after"]) <= LOGIN_WINDOW_S and "too many failed logins" in body
    assert request(server + "/", Authorization=f"Bearer {TOKEN}")[0] == 429  # the right token waits too
    assert request(server + "/healthz")[0] == 200 and request(server + "/login")[0] == 200


def dyn_event(at_s: float, rates: dict[str, float | None], levels: dict[str, float | None]) -> dict[str, Any]:
    """A ``dynamics`` event (schema: callevents.schema) with the given speaking rates and levels."""
    chans = {name: {"talk_s": at_s / 4, "talk_share": 0.25, "level_db": levels[name], "raised_s": 0.0,
                    "rate_sps": rates[name], "interruptions": 0, "yielded": 0} for name in rates}
    return {"kind": "dynamics", "at_s": at_s, "duration_s": at_s, "channels": chans, "non_talk_s": at_s / 2,
            "silence": {"min_s": 3.0, "count": 1, "total_s": 3.5, "longest_s": 3.5},
            "overtalk": {"min_s": 0.5, "count": 1, "total_s": 1.0}}


def test_call_page_embeds_marks_and_speech_trend(server: str, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    cust = "<b>cust</b>"
    calls = CallEvents(client, call_id="dyn", source="file", channels=["agent", cust])
    calls.start()
    client.xadd(results_key("dyn"), encode_entry({**rec("agent", 0, 0.1), "stream_id": "dyn"}))
    calls.publish([
        {"kind": "silence", "start_s": 0.0, "end_s": 3.5, "duration_s": 3.5},
        dyn_event(5.0, {"agent": 4.2, cust: None}, {"agent": -24.0, cust: None}),
        {"kind": "overtalk", "start_s": 8.0, "end_s": 9.0, "duration_s": 1.0, "interruption": True, "by": cust,
         "over": ["agent"], "yielded": False},
        {"kind": "silence", "start_s": 0.0, "end_s": 3.5, "duration_s": 3.5},  # a repeat: one mark
        dyn_event(10.0, {"agent": 4.6, cust: 5.1}, {"agent": -23.0, cust: -18.5}),
    ])
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def page_data() -> tuple[str, dict[str, Any]]:
        _, _, page = request(server + "/calls/dyn", **auth)
        return page, json.loads(page.split('<script type="application/json" id="ser-data">')[1].split("</script>")[0])

    page, data = page_data()
    assert data["marks"] == [
        {"kind": "silence", "start_s": 0.0, "end_s": 3.5},
        {"kind": "overtalk", "start_s": 8.0, "end_s": 9.0, "by": cust, "over": ["agent"], "yielded": False}]
    assert data["speech"] == [
        {"at_s": 5.0, "channels": {"agent": {"rate_sps": 4.2, "level_db": -24.0}, cust: {"rate_sps": None,
                                                                                        "level_db": None}}},
        {"at_s": 10.0, "channels": {"agent": {"rate_sps": 4.6, "level_db": -23.0}, cust: {"rate_sps": 5.1,
                                                                                         "level_db": -18.5}}}]
    assert 'id="speech-trends"' in page and "<b>cust" not in page
    # ended: call_ended's silences and overtalks that no event gave are marked too
    calls.end_fields["dynamics"] = {**dyn_event(12.0, {"agent": 4.6, cust: 5.1}, {"agent": -23.0, cust: -18.5}),
                                    "silences": [[0.0, 3.5], [10.5, 12.0]], "overtalks": [[8.0, 9.0]]}
    calls.end(reason="completed", duration_s=12.0, summary={})
    page, data = page_data()
    assert [(m["kind"], m["start_s"], m["end_s"]) for m in data["marks"]] == [
        ("silence", 0.0, 3.5), ("overtalk", 8.0, 9.0), ("silence", 10.5, 12.0)]
    assert data["marks"][1]["by"] == cust and [p["at_s"] for p in data["speech"]] == [5.0, 10.0]
    assert "ENDED (completed)" in page and 'id="speech-trends"' in page
