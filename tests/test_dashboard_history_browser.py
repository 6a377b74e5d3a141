"""ser-dashboard's History and Trends pages and an archived call's page in a real headless Chromium
(Debian's chromium and chromium-driver through Selenium; skipped, saying why, where they are absent), over
a real redis-server and a SQLite archive of constructed calls: log in, filter, sort, page with the
keyboard, open an archived call (timeline, scores per quarter), open Trends (the SVG chart).

Screenshots: the test's tmp folder, or docs/img with ``SER_SCREENSHOT_DIR=docs/img`` (README's pictures).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from archive_rows import add_call, open_archive
from sqlalchemy import Connection, Engine
from test_dashboard_app import TOKEN, dyn_event
from test_dashboard_browser import IMG_ENV, browser, fits_width, js, wait_until  # noqa: F401 - browser: a fixture
from test_dashboard_history import EVIL, serve

from archive.schema import events, segments, speakers
from dashboard.history import default_since

LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
AGENTS = ("anna.k", "ben.o", "chloe.m")


def _segments(rng: random.Random, call_id: str, duration: float, angry_from: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for ch, offset in (("agent", 0.0), ("customer", 2.5)):
        t, seq = offset, 0
        while t + 2.0 < duration:
            length = rng.uniform(2.0, 5.0)
            angry = ch == "customer" and t >= angry_from
            label = rng.choice(["angry", "angry", "sad"] if angry else ["neutral", "neutral", "calm", "happy"])
            conf = rng.uniform(0.45, 0.95)
            probs = {lab: (conf if lab == label else (1 - conf) / (len(LABELS) - 1)) for lab in LABELS}
            rows.append(dict(call_id=call_id, channel=ch, seq=seq, kind="result", start_s=round(t, 2),
                             end_s=round(min(t + length, duration), 2), label=label, confidence=round(conf, 3),
                             uncertain=conf < 0.5, probs=probs, history=seq, segments=None, error=None,
                             model="ser-cnn-lstm@3.1.0"))
            t += length + rng.uniform(2.0, 5.0)
            seq += 1
    return rows


def populate(engine: Engine) -> float:
    """24 calls over the last 6 days (three agents, two queues), one older, one with markup; returns now."""
    rng = random.Random(7)
    now = time.time()
    with engine.begin() as conn:
        for i in range(24):
            agent = AGENTS[i % 3]
            score = round(rng.uniform(-3.5, 3.0) - (1.0 if agent == "ben.o" else 0.0), 2)
            trend = rng.choice(["Improving", "SlightlyImproving", "NoChange", "SlightlyDeclining", "Declining"])
            add_call(conn, f"call-{i:02d}", started_ts=now - 3600 - i * 5.5 * 3600, agent=agent,
                     queue=("billing", "support")[i % 2], customer_score=score, customer_trend=trend,
                     customer_negative_share=round(max(0.0, min(1.0, 0.3 - score / 10)), 2),
                     duration_s=round(rng.uniform(90, 600)), interruptions=rng.randint(0, 6),
                     non_talk_share=round(rng.uniform(0.1, 0.4), 2), alert_rules=("customer_negative",) * (score < -2))
        add_call(conn, "call-old", started_ts=now - 20 * 86400, agent="anna.k", queue="billing")
        add_call(conn, "call-xss", raw_id=EVIL, started_ts=now - 5.8 * 86400, agent=EVIL, queue="support",
                 channels=("agent", "customer"), customer_score=-0.5)
        rich_call(conn, rng, "call-00")
    return now


def rich_call(conn: Connection, rng: random.Random, call_id: str) -> None:
    """Replace ``call_id``'s uniform segments by varied ones, with dynamics, an alert and quarter scores."""
    from archive.schema import calls

    duration = 120.0
    conn.execute(segments.delete().where(segments.c.call_id == call_id))
    conn.execute(segments.insert(), _segments(rng, call_id, duration, angry_from=45.0))
    dyn = {**dyn_event(duration, {"agent": 4.1, "customer": 5.2}, {"agent": -24.0, "customer": -19.0}),
           "silences": [[30.0, 34.0], [96.0, 100.5]], "overtalks": [[52.0, 53.2]]}
    conn.execute(calls.update().where(calls.c.call_id == call_id).values(
        duration_s=duration, dynamics=dyn, labels=LABELS, customer_score=-2.1, customer_trend="Declining"))
    for ch, quarters, score in (("agent", [1.2, 0.8, 0.9, 1.5], 1.1), ("customer", [0.6, -1.5, -3.8, -3.1], -2.1)):
        conn.execute(speakers.update().where(speakers.c.call_id == call_id, speakers.c.channel == ch).values(
            quarters=quarters, score=score, trend="Declining" if ch == "customer" else "NoChange"))
    conn.execute(events.insert(), [dict(call_id=call_id, event_key="alert-open", kind="alert_opened", ts=1.0,
                                        at_s=58.0, event={"kind": "alert_opened", "rule": "customer_negative",
                                                          "channel": "customer", "since_s": 58.0, "score": 0.71,
                                                          "threshold": 0.6, "window_s": 20.0, "ts": 1.0}),
                                   dict(call_id=call_id, event_key="alert-close", kind="alert_closed", ts=2.0,
                                        at_s=120.0, event={"kind": "alert_closed", "rule": "customer_negative",
                                                           "channel": "customer", "since_s": 58.0, "until_s": 120.0,
                                                           "score": 0.64, "threshold": 0.4, "reason": "call_ended",
                                                           "ts": 2.0})])


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Engine]:
    engine = open_archive(f"sqlite:///{tmp_path / 'calls.db'}")
    yield engine
    engine.dispose()


def ids(driver: Any) -> list[str]:
    return [tr.get_attribute("data-call-id") for tr in driver.find_elements("css selector", "#history tbody tr")]


def test_history_trends_and_an_archived_call_in_chromium(redis_url: str, archive: Engine,
                                                         browser: Any, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.keys import Keys

    populate(archive)
    img_dir = Path(os.environ.get(IMG_ENV) or tmp_path)
    img_dir.mkdir(parents=True, exist_ok=True)
    with serve(redis_url, archive) as base:
        browser.get(base + "/history")
        browser.find_element("id", "token").send_keys(TOKEN + Keys.ENTER)  # the login form, back to History
        wait_until(lambda: browser.find_elements("css selector", "#history"), 10, "History after login")
        assert len(ids(browser)) == 25 and "call-old" not in ids(browser)  # the last 7 days
        assert js(browser, "return window.__xss === undefined")
        assert EVIL in browser.find_element("css selector", 'tr[data-call-id="call-xss"]').text

        # filter by agent with the keyboard: type, Enter submits the form
        field = browser.find_element("css selector", 'form.filters input[name="agent"]')
        field.send_keys("ben.o" + Keys.ENTER)
        wait_until(lambda: set(ids(browser)) == {f"call-{i:02d}" for i in range(1, 24, 3)}, 10, "ben.o's calls")
        # sort by the customer score (the header is a link), lowest first on the second click
        browser.find_element("css selector", 'th[data-sort="customer_score"] a').click()
        browser.find_element("css selector", 'th[data-sort="customer_score"] a').click()
        wait_until(lambda: browser.find_element("css selector", 'th[data-sort="customer_score"]')
                   .get_attribute("aria-sort") == "ascending", 10, "the ascending sort")
        scores = [float(s.text) for s in browser.find_elements("css selector", "#history td .score")]
        assert scores == sorted(scores) and len(scores) == 8
        assert browser.find_element("css selector", 'input[name="agent"]').get_attribute("value") == "ben.o"

        # paging: 10 a page, Next reached with Tab and followed with Enter
        browser.get(base + "/history?limit=10")
        first = ids(browser)
        assert browser.find_element("id", "page-of").text == "Page 1 of 3" and len(first) == 10
        for _ in range(80):
            focused = browser.switch_to.active_element
            if focused.get_attribute("id") == "next-page":
                break
            focused.send_keys(Keys.TAB)
        else:
            raise AssertionError("Tab never reached the Next link")
        focused.send_keys(Keys.ENTER)
        wait_until(lambda: browser.find_element("id", "page-of").text == "Page 2 of 3", 10, "page 2")
        assert len(ids(browser)) == 10 and not set(ids(browser)) & set(first)
        browser.set_window_size(1280, 900)
        browser.get(base + "/history")
        browser.save_screenshot(str(img_dir / "dashboard-history.png"))
        assert fits_width(browser, 768), "History overflows a tablet-width window"

        # an archived call: the same page as a live one's, with its scores per quarter
        browser.find_element("css selector", 'a[href="/calls/call-00"]').click()
        wait_until(lambda: browser.find_element("id", "timeline").get_attribute("data-rendered") not in (None, "0"),
                   10, "the archived call's timeline")
        assert browser.find_element("id", "archived").text == "from the archive"
        assert browser.find_element("id", "live-state").text == "ENDED (completed)"
        assert len(browser.find_elements("css selector", "#timeline rect.segment")) == \
            int(browser.find_element("id", "timeline").get_attribute("data-rendered")) > 20
        assert len(browser.find_elements("css selector", "#timeline rect.mark")) == 4  # + archive_rows' silence
        row = browser.find_element("css selector", '#quarters tr[data-channel="customer"]')
        assert [c.text for c in row.find_elements("css selector", "td.num")][:5] == ["-2.1", "+0.6", "-1.5", "-3.8",
                                                                                      "-3.1"]
        assert "Declining" in row.text and len(row.find_elements("css selector", "svg.quarters rect.q")) == 4
        alert = browser.find_element("css selector", '#alerts li[data-state="closed"]')
        assert "customer_negative on customer: opened at 0:58.0" in alert.text and "(call ended)" in alert.text
        assert browser.find_element("id", "conn").text == ""  # no live stream for an archived call
        assert fits_width(browser, 768), "the archived call page overflows a tablet-width window"

        # Trends, from the nav: one line per agent
        browser.find_element("css selector", 'nav.top a[href="/trends"]').click()
        chart = wait_until(lambda: browser.find_element("id", "trend-chart"), 10, "the trends chart")
        groups = {g.get_attribute("data-group") for g in chart.find_elements("css selector", "g.series")}
        assert groups >= set(AGENTS) and EVIL in groups
        assert len(chart.find_elements("css selector", "g.series polyline")) >= 3
        tip = chart.find_element("css selector", 'g.series[data-group="ben.o"] circle title').get_attribute(
            "textContent")
        assert tip.startswith("ben.o, ") and "mean customer score" in tip
        assert js(browser, "return window.__xss === undefined")
        browser.get(base + f"/trends?since={default_since(5)}")  # the picture: the three agents of the last 5 days
        wait_until(lambda: browser.find_element("id", "trend-chart"), 10, "the trends chart")
        browser.save_screenshot(str(img_dir / "dashboard-trends.png"))
        # per queue and week, the negative share: the form's selects
        from selenium.webdriver.support.ui import Select

        Select(browser.find_element("id", "sel-by")).select_by_value("queue")
        Select(browser.find_element("id", "sel-metric")).select_by_value("negative_share")
        browser.find_element("css selector", "form.filters button[type=submit]").click()
        wait_until(lambda: browser.find_element("id", "trend-chart").get_attribute("data-metric") == "negative_share",
                   10, "the queue chart")
        groups = {g.get_attribute("data-group") for g in browser.find_elements("css selector", "g.series")}
        assert groups == {"billing", "support"}
        assert fits_width(browser, 768), "Trends overflows a tablet-width window"
        # a legend entry opens that group's calls on History
        browser.find_element("partial link text", "billing (").click()
        wait_until(lambda: browser.find_elements("css selector", "#history"), 10, "History of the billing queue")
        queues = {tr.find_elements("tag name", "td")[4].text for tr in browser.find_elements("css selector",
                                                                                             "#history tbody tr")}
        since = browser.find_element("css selector", 'input[name="since"]').get_attribute("value")
        assert queues == {"billing"} and since == default_since(5)  # Trends' time range carried over
    assert (img_dir / "dashboard-history.png").stat().st_size > 10_000
