"""ser-dashboard's archive pages over real HTTP (uvicorn on loopback, urllib as the client), a real
redis-server and a real archive database (SQLite and PostgreSQL): History (filters, sorting, paging,
invalid values), Trends, an ended call's page served from the archive, login, CSP and escaping.
The browser-level behaviour is in test_dashboard_history_browser.py."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import redis
from archive_rows import add_call, open_archive
from redis_server import free_port
from sqlalchemy import Engine
from test_dashboard_app import TOKEN, dyn_event, request
from test_dashboard_app import serve as app_serve

from archive.schema import calls, events
from callevents.writer import CallEvents
from dashboard.history import NO_ARCHIVE
from workers.contract import encode_entry, results_key

AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVIL = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
HOUR = 3600.0


def serve(redis_url: str, engine: Engine | None) -> AbstractContextManager[str]:
    return app_serve(redis_url, archive=engine)


@pytest.fixture
def engine(archive_url: str) -> Iterator[Engine]:
    eng = open_archive(archive_url)
    yield eng
    eng.dispose()


def populate(engine: Engine) -> float:
    """Five calls of the last days (two agents, two queues, scores -3..+2) and one 10 days old; returns now."""
    now = time.time()
    with engine.begin() as conn:
        for i, (agent, queue, score, trend) in enumerate([("a1", "billing", -3.0, "Declining"),
                                                          ("a2", "billing", 2.0, "Improving"),
                                                          ("a1", "sales", 0.5, "NoChange"),
                                                          ("a2", "sales", -1.5, "SlightlyDeclining"),
                                                          ("a1", "billing", 1.0, "SlightlyImproving")]):
            add_call(conn, f"c{i}", started_ts=now - (i + 1) * 5 * HOUR, agent=agent, queue=queue,
                     customer_score=score, customer_trend=trend, duration_s=60.0 + 10 * i, interruptions=i,
                     alert_rules=("customer_negative",) if score < 0 else ())
        add_call(conn, "old", started_ts=now - 10 * 86400, agent="a1", queue="billing")
    return now


def rows(body: str) -> list[str]:
    table = body.split('id="history"', 1)[1] if 'id="history"' in body else ""
    return re.findall(r'<tr data-call-id="([^"]+)"', table)


def same_as_cli(engine: Engine, body: str) -> list[str]:
    """The page's calls, asserted equal to those of the ``ser-calls`` command line it shows, run on the archive."""
    import html
    import shlex

    from click.testing import CliRunner

    from archive.calls_cli import main as calls_main

    args = shlex.split(html.unescape(re.search(r'<code id="cli">([^<]+)</code>', body).group(1)))
    assert args[:2] == ["ser-calls", "search"]
    url = engine.url.render_as_string(hide_password=False)
    got = CliRunner().invoke(calls_main, ["--database", url, *args[1:], "--format", "jsonl"])
    assert got.exit_code == 0, got.output
    assert [json.loads(line)["call_id"] for line in got.output.splitlines()] == rows(body)
    return rows(body)


def get(base: str, path: str, **params: str) -> tuple[int, dict[str, str], str]:
    return request(base + path + ("?" + urllib.parse.urlencode(params) if params else ""), **AUTH)


def test_without_an_archive_the_pages_are_404_and_unlinked(redis_url: str) -> None:
    with serve(redis_url, None) as base:
        for path in ("/history", "/trends"):
            assert request(base + path)[0] == 401  # the login comes first
            code, headers, body = request(base + path, **AUTH)
            assert code == 404 and body == NO_ARCHIVE and "content-security-policy" in headers
        _, _, overview = request(base + "/", **AUTH)
        assert 'href="/history"' not in overview


def test_history_filters_sorts_and_pages(redis_url: str, engine: Engine) -> None:
    populate(engine)
    with serve(redis_url, engine) as base:
        for path in ("/history?agent=a1", "/trends", "/calls/c0"):  # the login first; then back here
            code, headers, body = request(base + path)
            assert code == 401 and 'action="/login"' in body and "content-security-policy" in headers
            assert f'name="next" value="{path}"' in body
        code, headers, body = get(base, "/history")
        assert code == 200 and "default-src 'none'" in headers["content-security-policy"]
        assert rows(body) == ["c0", "c1", "c2", "c3", "c4"]  # the last 7 days by default, newest first
        assert 'aria-sort="descending" data-sort="started"' in body and 'aria-current="page">History' in body
        assert 'href="/calls/c0"' in body and 'class="score neg" title="negative, -5..+5">-3.0<' in body
        assert "\u2193 Declining" in body and "\u26a0 1" in body
        assert rows(get(base, "/history", since="")[2])[-1] == "old"  # an empty From: all time
        assert 'href="/history"' in get(base, "/")[2] and 'href="/trends"' in get(base, "/")[2]  # linked
        assert rows(get(base, "/history", agent="a2")[2]) == ["c1", "c3"]
        body = get(base, "/history", since=str(time.time() - 12 * HOUR))[2]  # unix seconds: kept in a text field
        assert rows(body) == ["c0", "c1"] and re.search(r'name="since" type="text" value="\d+\.\d+"', body)
        assert rows(get(base, "/history", queue="billing", customer_score_max="0")[2]) == ["c0"]
        assert rows(get(base, "/history", trend="improving")[2]) == ["c1"]
        assert rows(get(base, "/history", alert_rule="customer_negative")[2]) == ["c0", "c3"]
        assert rows(get(base, "/history", sort="customer_score", order="asc")[2]) == ["c0", "c3", "c2", "c4", "c1"]
        assert rows(get(base, "/history", sort="duration")[2]) == ["c4", "c3", "c2", "c1", "c0"]
        # clicking the sorted header again reverses it; the link keeps the filter
        body = get(base, "/history", agent="a1", sort="customer_score", order="desc")[2]
        assert rows(body) == ["c4", "c2", "c0"]
        link = re.search(r'data-sort="customer_score"><a href="([^"]+)"', body).group(1).replace("&amp;", "&")
        assert rows(request(base + link, **AUTH)[2]) == ["c0", "c2", "c4"]
        # paging
        body = get(base, "/history", limit="2", page="2")[2]
        assert rows(body) == ["c2", "c3"] and "3&ndash;4 of 5" in body and "Page 2 of 3" in body
        nxt = re.search(r'id="next-page" href="([^"]+)"', body).group(1).replace("&amp;", "&")
        assert rows(request(base + nxt, **AUTH)[2]) == ["c4"]
        assert 'id="prev-page"' in body
        # the page names the ser-calls command that lists the same calls (one filter set)
        body = get(base, "/history", queue="billing", sort="customer_score", order="asc", limit="2")[2]
        assert same_as_cli(engine, body) == ["c0", "c4"]
        assert same_as_cli(engine, get(base, "/history", agent="a1", page="1")[2]) == ["c0", "c2", "c4"]
        # nothing found: an empty state, not an empty table
        code, _, body = get(base, "/history", agent="nobody")
        assert code == 200 and 'id="no-calls"' in body and rows(body) == []


@pytest.mark.parametrize("params, named", [
    ({"customer_score_min": "abc"}, "customer_score_min: not a number: &#x27;abc&#x27;"),
    ({"customer_score_min": "9"}, "customer_score_min: must be in -5..5"),
    ({"since": "yesterday"}, "since: not an ISO 8601"),
    ({"trend": "up"}, "trend: must be one of"),
    ({"label": "angry"}, "label: needs label_share_min"),
    ({"sort": "agent"}, "sort: must be one of"),
    ({"page": "0"}, "page: must be a whole number"),
    ({"limit": "100000"}, "limit: must be a whole number"),
])
def test_history_invalid_values_name_the_parameter(redis_url: str, tmp_path: Any, params: dict[str, str],
                                                   named: str) -> None:
    eng = open_archive(f"sqlite:///{tmp_path / 'a.db'}")
    with serve(redis_url, eng) as base:
        code, _, body = get(base, "/history", **params)
        assert code == 400 and 'id="filter-error"' in body and named in body and rows(body) == []
        assert f'value="{params.get("since", "")}"' in body or "since" not in params  # the form keeps the input
    eng.dispose()


def test_trends_chart_and_table(redis_url: str, engine: Engine) -> None:
    now = populate(engine)
    with serve(redis_url, engine) as base:
        code, headers, body = get(base, "/trends")
        assert code == 200 and "content-security-policy" in headers and "<script" not in body
        assert 'id="trend-chart"' in body and 'data-metric="customer_score"' in body
        assert re.search(r'data-lines="2"', body) and 'data-group="a1"' in body and 'data-group="a2"' in body
        link = re.search(r'id="chart-legend"><li><span[^>]*></span><a href="([^"]+)">a1 \(4 call\(s\)\)', body)
        assert rows(request(base + link.group(1).replace("&amp;", "&"), **AUTH)[2]) == ["c0", "c2", "c4", "old"]
        table = body.split('id="trend-table"')[1]
        assert len(re.findall(r'<tr><th scope="row">', table)) >= 2  # 28 days by default: "old" counts
        body = get(base, "/trends", by="queue", period="week", metric="negative_share")[2]
        assert 'data-group="billing"' in body and 'data-group="sales"' in body and "week of " in body
        assert 'data-metric="negative_share"' in body
        code, _, body = get(base, "/trends", by="agent_id")
        assert code == 400 and "by: must be one of agent, queue, tenant" in body and 'id="trend-chart"' not in body
        body = get(base, "/trends", since=str(now + 86400))[2]
        assert 'id="no-trends"' in body and 'id="trend-chart"' not in body


def test_an_ended_call_is_served_from_the_archive(redis_url: str, engine: Engine) -> None:
    populate(engine)
    dyn = {**dyn_event(60.0, {"agent": 4.0, "customer": 5.0}, {"agent": -24.0, "customer": -20.0}),
           "silences": [[5.0, 7.0], [50.0, 54.0]], "overtalks": []}
    with engine.begin() as conn:
        conn.execute(calls.update().where(calls.c.call_id == "c0").values(dynamics=dyn))
        conn.execute(events.insert(), [dict(call_id="c0", event_key="alert-o", kind="alert_opened", ts=1.0, at_s=10.0,
                                            event={"kind": "alert_opened", "rule": "customer_negative",
                                                   "channel": "customer", "since_s": 10.0, "score": 0.7,
                                                   "threshold": 0.6, "window_s": 20.0, "ts": 1.0})])
    client = redis.Redis.from_url(redis_url)
    CallEvents(client, call_id="c1", source="twilio", channels=["agent", "customer"]).start()  # still in Redis
    client.xadd(results_key("c1"), encode_entry({"kind": "result", "stream_id": "c1", "channel": "agent", "seq": 0,
                                                 "start_s": 0.0, "end_s": 3.0, "label": "calm", "confidence": 0.9,
                                                 "probs": {"calm": 0.9, "angry": 0.1}, "model": "m@1"}))
    with serve(redis_url, engine) as base:
        assert request(base + "/calls/c0")[0] == 401
        for path in ("/calls/c0", "/calls/" + urllib.parse.quote("raw:c0", safe="")):  # key id or raw id
            code, headers, page = request(base + path, **AUTH)
            assert code == 200 and 'id="archived"' in page and "ENDED (completed)" in page
            nonce = headers["content-security-policy"].split("'nonce-")[1].split("'")[0]
            assert f'<script nonce="{nonce}">' in page
        data = json.loads(page.split('<script type="application/json" id="ser-data">')[1].split("</script>")[0])
        assert data["live"] is False and len(data["segments"]) == 8 and len(data["turns"]) == 2
        assert data["marks"] == [{"kind": "silence", "start_s": 5.0, "end_s": 7.0},
                                 {"kind": "silence", "start_s": 50.0, "end_s": 54.0}]
        assert 'id="conversation"' in page and '<b id="silence-count">1</b>' in page
        assert [e["kind"] for e in data["events"]] == ["alert_opened", "call_ended"]
        quarters = page.split('id="quarters"')[1].split("</section>")[0]
        assert '<tr data-channel="customer">' in quarters
        assert 'class="score neg" title="negative, -5..+5">-3.0' in quarters
        assert quarters.count('data-quarter="3"') == 2 and "Q3: no speech" in quarters  # quarters [0, .5, None, 1]
        assert 'id="trends"' not in page and "summaries" in page  # no trend events archived; the summary is
        assert 'id="speech-trends"' not in page  # nor dynamics events for this call: no empty charts
        _, _, live = request(base + "/calls/c1", **AUTH)
        assert 'id="archived"' not in live and 'id="live-state" class="state-live"' in live  # Redis first
        code, _, body = request(base + "/calls/nope", **AUTH)
        assert code == 404 and "in Redis or in the archive" in body
    client.close()


def test_markup_from_calls_stays_text(redis_url: str, engine: Engine) -> None:
    with engine.begin() as conn:
        add_call(conn, "x1", raw_id=EVIL, started_ts=time.time() - HOUR, agent=EVIL, queue="<b>q</b>",
                 channels=("agent", "<i>customer</i>"), params={"<k>": "<v onload=x>"})
    with serve(redis_url, engine) as base:
        bodies = [get(base, "/history")[2], get(base, "/trends")[2], get(base, "/trends", by="queue")[2],
                  get(base, "/history", agent=EVIL)[2], request(base + "/calls/x1", **AUTH)[2]]
        for body in bodies:
            assert "<script>window" not in body and "<img src=x" not in body and "<b>q" not in body
            assert "<i>customer" not in body and "<v onload" not in body
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in bodies[0] and rows(bodies[3]) == ["x1"]
        assert 'data-group="&lt;script&gt;' in bodies[1] and "&lt;b&gt;q&lt;/b&gt;" in bodies[2]
        assert '<tr data-channel="&lt;i&gt;customer&lt;/i&gt;">' in bodies[4]


def test_cli_opens_the_archive_read_only_and_says_what_is_wrong(redis_url: str, tmp_path: Any) -> None:
    import subprocess
    import sys

    from sqlalchemy import create_engine, inspect
    from test_dashboard_browser import ROOT, env, wait_until

    def start(*args: str, **environ: str) -> tuple[subprocess.Popen[str], str]:
        e = {**env(), **environ}
        e["SER_DASHBOARD_TOKEN"] = TOKEN
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "dashboard.cli", "--redis-url", redis_url, "--port", str(port),
                                 *args], env=e, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return proc, f"http://127.0.0.1:{port}"

    # a password in the URL file never shows; an unreachable database or a missing file is one line, exit 1
    from click.testing import CliRunner

    from dashboard.cli import main as dashboard_main

    secret = tmp_path / "url"
    secret.write_text(f"postgresql+psycopg://user:s3cret-pw@127.0.0.1:{free_port()}/calls\n")
    for args, said in ((["--archive-url-file", str(secret)], "cannot open the archive database"),
                       (["--archive-url-file", str(tmp_path / "nope")], "cannot read --archive-url-file")):
        got = CliRunner().invoke(dashboard_main, ["--redis-url", redis_url, "--port", str(free_port()), *args],
                                 env={"SER_DASHBOARD_TOKEN": TOKEN})
        assert got.exit_code == 1 and said in got.output and "s3cret-pw" not in got.output, got.output
        assert got.exception is None or isinstance(got.exception, SystemExit)
        assert len(got.output.strip().splitlines()) == 1
    # an archive without tables: said at start; not created (a reader never migrates); the pages answer 503
    empty = tmp_path / "empty.db"
    proc, base = start("--archive", f"sqlite:///{empty}")
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "the archive has no tables yet" in line, line
        wait_until(lambda: request(base + "/healthz")[0] == 200, 20, "ser-dashboard to answer")
        code, _, body = request(base + "/history", **AUTH)
        assert code == 503 and "The call archive cannot be read" in body
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert "calls" not in inspect(create_engine(f"sqlite:///{empty}")).get_table_names()
    # a migrated archive, its URL from the environment
    good = open_archive(f"sqlite:///{tmp_path / 'calls.db'}")
    populate(good)
    good.dispose()
    proc, base = start(SER_ARCHIVE_URL=f"sqlite:///{tmp_path / 'calls.db'}")
    try:
        assert proc.stderr is not None
        assert "History at /history" in proc.stderr.readline()
        wait_until(lambda: request(base + "/healthz")[0] == 200, 20, "ser-dashboard to answer")
        code, _, body = request(base + "/history", **AUTH)
        assert code == 200 and rows(body) == ["c0", "c1", "c2", "c3", "c4"]
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_the_archived_page_renders_what_the_redis_page_did(redis_url: str, engine: Engine) -> None:
    """A call written to Redis as the producer does, archived through archive.ingest from its streams; once
    Redis has forgotten it, its page from the archive shows the same timeline, turns, marks, alerts,
    Conversation and summary as the page Redis gave, plus its scores per quarter."""
    from archive.ingest import archive_call
    from callevents.rules import EventSettings, Rule
    from callevents.schema import call_key, decode_event, events_key
    from workers.contract import decode_entry

    client = redis.Redis.from_url(redis_url)
    call = "<b>e2e</b>:1"
    calls_ = CallEvents(client, call_id=call, source="twilio", channels=["agent", "customer"], model="m@1",
                        labels=["neutral", "happy", "angry"], params={"agent": "a9", "queue": "q9"},
                        settings=EventSettings(rules=(Rule(window_s=3.0),), trend_every_s=3.0))
    calls_.start()
    key = calls_.call_id
    records = []
    for seq in range(6):
        for ch, neg in (("agent", 0.1), ("customer", 0.2 if seq < 3 else 0.9)):
            records.append({"kind": "result", "stream_id": key, "channel": ch, "seq": seq, "start_s": 3.0 * seq,
                            "end_s": 3.0 * seq + 2.5, "label": "angry" if neg > 0.5 else "neutral",
                            "confidence": 0.8, "probs": {"neutral": 1 - neg - 0.05, "happy": 0.05, "angry": neg},
                            "model": "m@1", "uncertain": seq == 1})
    records.append({"kind": "turn", "stream_id": key, "channel": "customer", "seq": 0, "start_s": 9.0, "end_s": 17.5,
                    "label": "angry", "confidence": 0.9, "probs": {"neutral": 0.05, "happy": 0.05, "angry": 0.9},
                    "segments": 3, "model": "m@1"})
    for r in records:
        client.xadd(results_key(key), encode_entry(r))
    calls_.add([r for r in records if r["kind"] == "result"])
    calls_.publish([{"kind": "silence", "start_s": 2.5, "end_s": 6.0, "duration_s": 3.5},
                    dyn_event(10.0, {"agent": 4.0, "customer": 5.0}, {"agent": -24.0, "customer": -20.0})])
    calls_.end_fields["dynamics"] = {**dyn_event(18.0, {"agent": 4.0, "customer": 5.0},
                                                 {"agent": -24.0, "customer": -20.0}),
                                     "silences": [[2.5, 6.0], [14.0, 17.5]], "overtalks": [[8.0, 8.6]]}
    calls_.end(reason="completed", duration_s=18.0, summary={})
    archive_call(engine, events=[decode_event(f) for _, f in client.xrange(events_key(key))],
                 records=[decode_entry(f) for _, f in client.xrange(results_key(key))], call_id=key)

    def page_of(base: str) -> tuple[str, dict[str, Any]]:
        _, _, page = request(base + "/calls/" + urllib.parse.quote(key, safe=""), **AUTH)
        return page, json.loads(page.split('<script type="application/json" id="ser-data">')[1].split("</script>")[0])

    def section(page: str, start: str, end: str) -> str:
        return page.split(start, 1)[1].split(end, 1)[0]

    with serve(redis_url, engine) as base:
        live_page, live = page_of(base)
        assert 'id="archived"' not in live_page
        client.delete(call_key(key), events_key(key), results_key(key))  # the streams expire
        page, data = page_of(base)
    client.close()
    assert 'id="archived"' in page and "ENDED (completed)" in page and "&lt;b&gt;e2e&lt;/b&gt;:1" in page
    for name in ("segments", "turns", "marks", "channels", "labels", "colours", "duration_s", "model", "live"):
        assert data[name] == live[name], name
    alerts = [e for e in live["events"] if e["kind"].startswith("alert_")]
    assert alerts and [e for e in data["events"] if e["kind"].startswith("alert_")] == alerts
    for start, end in (('<div class="summaries">', "</div>\n"), ('id="conversation"', "</section>"),
                       ('<p class="meta">Model', "</p>")):
        assert section(page, start, end) == section(live_page, start, end), start
    quarters = section(page, 'id="quarters"', "</section>")
    assert '<tr data-channel="customer"><th scope="row">customer</th>' in quarters
    assert 'id="speech-trends"' in page  # the archived dynamics events draw it
    assert "\u2193 Declining" in quarters  # the customer turned angry in the second half


def test_redis_down_an_archived_call_is_still_shown(tmp_path: Any) -> None:
    from redis_server import RedisServer

    eng = open_archive(f"sqlite:///{tmp_path / 'a.db'}")
    populate(eng)
    with RedisServer(tmp_path) as rs, serve(rs.url(), eng) as base:
        rs.stop()
        assert request(base + "/", **AUTH)[0] == 503
        code, _, page = request(base + "/calls/c1", **AUTH)
        assert code == 200 and 'id="archived"' in page
        assert request(base + "/calls/nope", **AUTH)[0] == 404
        assert rows(get(base, "/history")[2]) == ["c0", "c1", "c2", "c3", "c4"]
    eng.dispose()


def test_schema_check_names_the_revision(tmp_path: Any) -> None:
    from sqlalchemy import text

    from archive.schema import SCHEMA_REVISION
    from dashboard.archived import schema_problem

    eng = open_archive(f"sqlite:///{tmp_path / 'a.db'}")
    assert schema_problem(eng) is None
    with eng.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    problem = schema_problem(eng)
    assert problem is not None and f"at revision 0000, this dashboard reads {SCHEMA_REVISION}" in problem
    eng.dispose()


def test_a_select_only_postgresql_role_is_enough(redis_url: str, pg_url: str) -> None:
    """The dashboard only reads: a role that may SELECT the archive's tables and nothing else serves every page."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from archive.db import open_engine
    from archive.schema import calls as calls_table
    from dashboard.archived import schema_problem

    owner = open_archive(pg_url)
    populate(owner)
    role = f"dash_reader_{os.getpid()}"
    with owner.begin() as conn:
        conn.execute(text(f"DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"))
        conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
    reader = open_engine(make_url(pg_url).set(username=role).render_as_string(hide_password=False), migrate=False)
    try:
        with reader.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar_one() == role
            with pytest.raises(Exception, match="permission denied"):
                conn.execute(calls_table.delete())
        assert schema_problem(reader) is None
        with serve(redis_url, reader) as base:
            assert rows(get(base, "/history")[2]) == ["c0", "c1", "c2", "c3", "c4"]
            assert 'id="trend-chart"' in get(base, "/trends")[2]
            assert 'id="quarters"' in request(base + "/calls/c2", **AUTH)[2]
    finally:
        reader.dispose()
        with owner.begin() as conn:
            conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"))
        owner.dispose()


def test_a_blocked_archive_query_does_not_stall_the_live_pages(redis_url: str, pg_url: str) -> None:
    """While a History query waits on a lock in PostgreSQL, the overview's SSE still delivers the live
    call events at once (the queries run in the threadpool, not on the event loop)."""
    from sqlalchemy import text
    from test_dashboard_app import sse

    eng = open_archive(pg_url)
    populate(eng)
    client = redis.Redis.from_url(redis_url)
    with serve(redis_url, eng) as base, eng.connect() as locker:
        locker.execute(text("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE"))  # held until the rollback below
        got: list[int] = []
        waiting = threading.Thread(target=lambda: got.append(get(base, "/history")[0]), daemon=True)
        waiting.start()
        time.sleep(1.0)
        assert waiting.is_alive() and not got  # the History query is blocked in the database
        CallEvents(client, call_id="live-1", source="file", channels=["agent"]).start()
        t0 = time.monotonic()
        (msg,) = sse(base, "/sse/overview", 1, timeout=5.0)
        assert msg["data"]["kind"] == "call_started" and time.monotonic() - t0 < 3.0
        assert request(base + "/healthz")[0] == 200 and waiting.is_alive()
        locker.rollback()
        waiting.join(10)
        assert got == [200]
    client.close()
    eng.dispose()
