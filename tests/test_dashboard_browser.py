"""ser-dashboard end to end: a real redis-server, a real worker with the shipped model, a real-time
``ser-produce`` call, ``ser-dashboard`` and a real headless Chromium (Debian's chromium and
chromium-driver through Selenium). Skipped, saying why, where chromium/chromedriver/selenium are
absent (``bash .ci/install-system-deps.sh`` installs them).

The call is the first 24 s of examples/call.wav. With the shipped model (2.0.0, utterance segments)
the customer's three angry utterances (6.9-15.9 s) are negative enough for the rule below (window
6 s, opens at >= 0.6, closes at <= 0.55) to open at the end of the first (8.684 s); the customer
says nothing more before 24 s, so the alert closes when the call ends (1.3.0's fixed 3 s windows
gave a quieter 15-18 s window that closed it at 18 s). The test asserts that from the events, so a
new model that changes this fails loudly here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sysdeps
from redis_server import free_port
from test_dashboard_app import dyn_event

from callevents.schema import LOST_AFTER_S, call_key, decode_event, events_key
from callevents.writer import CallEvents
from models.ids import key_id
from workers.contract import encode_entry, results_key
from workers.status import wait_for_workers

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789abcdef"
CALL_ID = "live-call"
XSS_ID = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
RULES = 'trend_every_s = 3\n[[rule]]\nname = "customer_negative"\nwindow_s = 6\nopen_at = 0.6\nclose_at = 0.55\n'
#: Where the screenshots go: the test's tmp folder, or docs/img when refreshing the README's pictures
#: (``SER_SCREENSHOT_DIR=docs/img python -m pytest tests/test_dashboard_browser.py``); a plain test
#: run must not rewrite tracked files.
IMG_ENV = "SER_SCREENSHOT_DIR"


def env() -> dict[str, str]:
    out = dict(os.environ)
    for key in ("SER_REDIS_URL", "SER_DASHBOARD_TOKEN", "SER_ALERT_RULES", "SER_ARCHIVE_URL", "SER_ARCHIVE_URL_FILE"):
        out.pop(key, None)
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    return out


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # an element not there yet, a page mid-reload
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def get(url: str, **headers: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class Dashboard:
    def __init__(self, redis_url: str, port: int) -> None:
        self.redis_url, self.port, self.proc = redis_url, port, None
        self.base = f"http://127.0.0.1:{port}"

    def start(self) -> Dashboard:
        e = env()
        e["SER_DASHBOARD_TOKEN"] = TOKEN
        self.proc = subprocess.Popen([sys.executable, "-m", "dashboard.cli", "--redis-url", self.redis_url,
                                      "--port", str(self.port)], env=e, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: get(self.base + "/healthz") == 200, 20, "ser-dashboard to answer")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    hint = "bash .ci/install-system-deps.sh installs Debian's chromium and chromium-driver"
    chromium = sysdeps.binary("chromium", "chromium-browser", hint=hint)
    driver_bin = sysdeps.binary("chromedriver", hint=hint)
    webdriver = sysdeps.module("selenium.webdriver", "pip install .[dev]")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--window-size=1280,800", "--disable-background-networking", "--disable-component-update"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_bin), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def short_call(path: Path, seconds: float = 24.0) -> Path:
    import soundfile as sf

    y, sr = sf.read(ROOT / "examples" / "call.wav", dtype="int16")
    sf.write(path, y[: int(seconds * sr)], sr, subtype="PCM_16")
    return path


def js(driver: Any, script: str) -> Any:
    return driver.execute_script(script)


def fits_width(driver: Any, width: int) -> bool:
    """No horizontal scrolling at ``width`` CSS pixels (then back to 1280x800)."""
    driver.set_window_size(width, 1024)
    try:
        check = f"return window.innerWidth <= {width} && document.documentElement.scrollWidth <= window.innerWidth"
        return bool(wait_until(lambda: js(driver, check), 5, f"a {width} px wide window"))
    finally:
        driver.set_window_size(1280, 800)


def test_dashboard_live_call_in_chromium(redis_url: str, browser: Any, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    port = free_port()
    dash = Dashboard(redis_url, port)
    worker = subprocess.Popen([sys.executable, "-m", "workers.cli", "--redis-url", redis_url], env=env(), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    producer = None
    try:
        dash.start()
        assert wait_for_workers(client, "ser", 1, 60), "the worker did not come up"
        # Without the token: 401 for pages and streams; a wrong token is refused too.
        for path in ("/", f"/calls/{CALL_ID}", "/sse/overview", f"/sse/call?id={CALL_ID}"):
            assert get(dash.base + path) == 401, path
        assert get(dash.base + "/", Authorization="Bearer wrong-token-0123456789") == 401
        assert get(dash.base + "/", Authorization=f"Bearer {TOKEN}") == 200

        # A call whose id, channel name and parameters carry markup (as a gateway may write them),
        # with one result record marked uncertain.
        hostile = CallEvents(client, call_id=XSS_ID, source="twilio", channels=["agent", "<b>customer</b>"],
                             params={"note": "<img src=x onerror=window.__xss=3>"}, labels=["neutral", "angry"])
        hostile.start()
        client.xadd(results_key(XSS_ID), encode_entry({
            "kind": "result", "stream_id": XSS_ID, "channel": "agent", "seq": 0, "start_s": 0.0, "end_s": 3.0,
            "label": "angry", "confidence": 0.41, "probs": {"neutral": 0.59, "angry": 0.41}, "model": "x@1",
            "uncertain": True}))

        # Log in once through the form.
        browser.get(dash.base + "/")
        assert "dashboard token" in browser.page_source
        browser.find_element("id", "token").send_keys(TOKEN)
        browser.find_element("css selector", "form button[type=submit]").click()
        wait_until(lambda: browser.find_elements("css selector", "#live"), 10, "the overview after login")
        cookie = browser.get_cookie("ser_dashboard")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]

        # The hostile call is listed, as text.
        row = wait_until(lambda: browser.find_element("css selector", "#live tr[data-call-id]"), 10, "hostile row")
        assert XSS_ID in row.text and "<b>customer</b>" in row.text
        assert js(browser, "return window.__xss === undefined")

        # The live call.
        rules = tmp_path / "rules.toml"
        rules.write_text(RULES)
        producer = subprocess.Popen(
            [sys.executable, "-m", "producer.cli", str(short_call(tmp_path / "call.wav")), "--redis-url", redis_url,
             "--realtime", "--stream-id", CALL_ID, "--channel-names", "agent,customer", "--alert-rules", str(rules),
             "--format", "jsonl"], env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sel = f'#live tr[data-call-id="{CALL_ID}"]'
        wait_until(lambda: browser.find_element("css selector", sel), 15, "the live call on the overview")

        def labelled() -> list[str]:
            return [b.get_attribute("data-channel") for b in
                    browser.find_elements("css selector", f"{sel} .badge[data-label]")]

        wait_until(lambda: sorted(labelled()) == ["agent", "customer"], 20, "labels for both speakers")
        assert producer.poll() is None, "the call ended before both labels showed"
        badges = browser.find_element("css selector", sel).text
        assert "agent: " in badges and "customer: " in badges and "%" in badges
        wait_until(lambda: "alerting" in browser.find_element("css selector", sel).get_attribute("class"), 20,
                   "the open alert on the overview")
        # Alerting calls sort first.
        assert browser.find_element("css selector", "#live tbody tr").get_attribute("data-call-id") == CALL_ID
        wait_until(lambda: "worker(s)" in browser.find_element("id", "pool").text, 10, "pool health")
        img_dir = Path(os.environ.get(IMG_ENV) or tmp_path)
        img_dir.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(img_dir / "dashboard-overview.png"))
        assert fits_width(browser, 768), "the overview overflows a tablet-width window"

        # The call page while the call runs, opened with the keyboard: the timeline grows, the
        # alert shows up, then closes.
        from selenium.webdriver.common.keys import Keys

        for _ in range(12):
            focused = browser.switch_to.active_element
            if focused.get_attribute("class") == "call-id" and focused.text == CALL_ID:
                break
            focused.send_keys(Keys.TAB)
        else:
            raise AssertionError("Tab never reached the live call's link")
        focused.send_keys(Keys.ENTER)
        wait_until(lambda: browser.find_element("id", "timeline").get_attribute("data-rendered") is not None, 10,
                   "the call page")

        def rects() -> int:
            return len(browser.find_elements("css selector", "#timeline rect.segment"))

        first = rects()
        wait_until(lambda: browser.find_elements("css selector", '#alerts li[data-state="open"]'), 20, "open alert")
        wait_until(lambda: rects() > first, 15, "new segments on the timeline")
        # the conversation's dynamics, live from the dynamics events (talk time per speaker)
        at = wait_until(lambda: browser.find_element("id", "conversation").get_attribute("data-at"), 15,
                        "the live conversation figures")
        assert len(browser.find_elements("css selector", "#conversation tr[data-channel]")) == 2 and float(at) > 0
        assert producer.poll() is None and browser.find_element("id", "live-state").text == "LIVE"
        grown = rects()
        # Restart the dashboard mid-call: the page reconnects and resumes from its last ids.
        dash.stop()
        wait_until(lambda: "reconnecting" in browser.find_element("id", "conn").text, 10, "the page to notice")
        dash.start()
        wait_until(lambda: browser.find_element("id", "conn").text == "live", 15, "the page to reconnect")
        wait_until(lambda: rects() > grown, 15, "segments after the restart")
        assert browser.find_element("tag name", "body").get_attribute("data-duplicate-records") is None
        closed = wait_until(lambda: browser.find_element("css selector", '#alerts li[data-state="closed"]'), 20,
                            "the alert to close")
        assert "customer_negative on customer" in closed.text and "closed at 0:24.0 (call ended)" in closed.text

        out, err = producer.communicate(timeout=60)
        assert producer.returncode == 0, err
        results = [json.loads(line) for line in out.splitlines() if line.strip()]
        # The page reloads into the final rendering (the --report page) with the summary.
        wait_until(lambda: browser.find_element("id", "live-state").text.startswith("ENDED"), 20, "the final page")
        segs = sorted((r.get_attribute("data-channel"), int(r.get_attribute("data-seq")))
                      for r in browser.find_elements("css selector", "#timeline rect.segment"))
        assert segs == sorted((r["channel"], r["seq"]) for r in results if r["kind"] == "result")
        assert len(browser.find_elements("css selector", ".channel-summary")) == 2
        assert {r.get_attribute("tabindex") for r in browser.find_elements("css selector", "#timeline rect.segment")} \
            == {"0"}  # every segment is reachable with Tab
        assert fits_width(browser, 768), "the call page overflows a tablet-width window"
        browser.save_screenshot(str(img_dir / "dashboard-call.png"))
        assert (img_dir / "dashboard-call.png").stat().st_size > 10_000
        events = [decode_event(f) for _, f in client.xrange(events_key(CALL_ID))]
        alerts = [(e["kind"], e["since_s"], e.get("until_s")) for e in events if e["kind"].startswith("alert")]
        assert alerts == [("alert_opened", 8.684, None), ("alert_closed", 8.684, 24.0)]
        assert events[-1]["kind"] == "call_ended" and events[-1]["reason"] == "completed"
        # the final page's Conversation section shows call_ended's dynamics; silences on the strip
        dyn = events[-1]["dynamics"]
        browser.get(dash.base + "/calls/" + CALL_ID)
        talk = {tr.get_attribute("data-channel"): tr.find_element("css selector", "td.talk").text
                for tr in browser.find_elements("css selector", "#conversation tr[data-channel]")}
        assert talk == {name: f"{ch['talk_s']:.1f} s" for name, ch in dyn["channels"].items()}
        assert browser.find_element("id", "silence-count").text == str(dyn["silence"]["count"])
        assert len(browser.find_elements("css selector", "#conversation-strip rect.silence")) == len(dyn["silences"])
        assert [e["kind"] for e in events].count("dynamics") >= 4
        # ... and on the timeline, with the speaking-rate and loudness trend from the dynamics events
        assert sorted((m.get_attribute("data-kind"), float(m.get_attribute("data-start")))
                      for m in browser.find_elements("css selector", "#timeline rect.mark")) == \
            sorted([("silence", a) for a, _ in dyn["silences"]] + [("overtalk", a) for a, _ in dyn["overtalks"]])
        for name in ("agent", "customer"):
            rates = [e for e in events if e["kind"] == "dynamics" and e["channels"][name]["rate_sps"] is not None]
            line = browser.find_element("css selector", f'#speech-trends figure[data-channel="{name}"] polyline.rate')
            assert int(line.get_attribute("data-points")) == len(rates) > 0

        # Both calls on the overview: the live one under "recently ended"; the hostile call page is inert.
        browser.get(dash.base + "/")
        wait_until(lambda: browser.find_element("css selector", f'#ended tr[data-call-id="{CALL_ID}"]'), 10,
                   "the ended call")
        # A call whose producer stops its heartbeat moves to "recently ended" as lost, live (from the
        # server's heartbeat message, no reload); heard of again, it is live again.
        hostile_row = f'tr[data-call-id="{key_id(XSS_ID)}"]'  # rows are keyed by the key id, show the raw id
        client.hset(call_key(XSS_ID), "alive", time.time())
        wait_until(lambda: browser.find_element("css selector", "#live " + hostile_row), 10, "the hostile call live")
        client.hset(call_key(XSS_ID), "alive", time.time() - LOST_AFTER_S - 5)
        lost = wait_until(lambda: browser.find_element("css selector", "#ended " + hostile_row), 10, "the lost call")
        assert "lost: no heartbeat" in lost.text and not browser.find_elements("css selector", "#live " + hostile_row)
        client.hset(call_key(XSS_ID), "alive", time.time())
        wait_until(lambda: browser.find_element("css selector", "#live " + hostile_row), 10, "the call live again")
        browser.get(dash.base + "/calls/" + urllib.request.quote(XSS_ID, safe=""))
        wait_until(lambda: browser.find_element("id", "call-title").text == XSS_ID, 10, "the hostile call page")
        assert js(browser, "return window.__xss === undefined")
        uncertain = browser.find_element("css selector", "#timeline rect.segment.uncertain")
        assert "uncertain" in uncertain.find_element("tag name", "title").get_attribute("textContent")
        # Logging out ends the session.
        browser.find_element("css selector", "form.logout button").click()
        browser.get(dash.base + "/")
        assert "dashboard token" in browser.page_source
    finally:
        for proc in (producer, worker):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        dash.stop()
        client.close()


def check_marks(driver: Any, spans: list[tuple[str, float, float]], end: float) -> None:
    """The timeline's marks are ``spans`` ((kind, start, end) by start), placed on the lanes' time axis
    (``end`` seconds wide), in the row under the speakers' lanes."""
    svg = driver.find_element("id", "timeline")
    assert float(svg.get_attribute("data-end")) == pytest.approx(end)
    lane = driver.find_element("css selector", "#timeline g.channel rect.lane")
    x0, width = float(lane.get_attribute("x")), float(lane.get_attribute("width"))
    lanes_bottom = max(float(r.get_attribute("y")) + float(r.get_attribute("height"))
                       for r in driver.find_elements("css selector", "#timeline rect.lane"))
    marks = driver.find_elements("css selector", "#timeline g.marks rect.mark")
    got = sorted((m.get_attribute("data-kind"), *(float(m.get_attribute(k)) for k in ("data-start", "data-end", "x",
                                                                                      "width", "y")),
                  m.get_attribute("class")) for m in marks)
    assert [g[:3] for g in got] == sorted(spans)
    for kind, a, b, x, w, y, cls in got:
        assert cls == f"mark {kind}" and y >= lanes_bottom
        assert x == pytest.approx(x0 + width * a / end, abs=0.01)
        assert w == pytest.approx(width * (b - a) / end, abs=0.01)


def check_speech(driver: Any, points: list[dict[str, Any]], channels: list[str], end: float) -> None:
    """Each speaker's speaking-rate and loudness lines hold the points of ``points`` (dynamics events) where
    the value is known, at x = 300 at_s / end and y on the scales the SVG names."""
    figs = {f.get_attribute("data-channel"): f for f in driver.find_elements("css selector", "#speech-trends figure")}
    assert list(figs) == channels
    for name, fig in figs.items():
        svg = fig.find_element("tag name", "svg")
        assert float(svg.get_attribute("data-end")) == pytest.approx(end)
        for cls, field, lo, hi in (("rate", "rate_sps", 0.0, float(svg.get_attribute("data-rate-max"))),
                                   ("level", "level_db", float(svg.get_attribute("data-level-min")),
                                    float(svg.get_attribute("data-level-max")))):
            want = [(p["at_s"], p["channels"][name][field]) for p in points if p["channels"][name][field] is not None]
            line = fig.find_element("css selector", f"polyline.{cls}")
            assert int(line.get_attribute("data-points")) == len(want)
            xy = [tuple(float(v) for v in pt.split(",")) for pt in line.get_attribute("points").split()]
            assert xy == [pytest.approx((300 * t / end, 58 - 56 * (v - lo) / (hi - lo)), abs=0.06) for t, v in want]
        last = [p for p in points if p["channels"][name]["rate_sps"] is not None]
        caption = fig.find_element("tag name", "figcaption").text
        assert caption.startswith(name + ": ") and (f"{last[-1]['channels'][name]['rate_sps']:.1f} syllables/s"
                                                    in caption if last else "no speech measured yet" in caption)


def test_call_page_marks_silences_overtalk_and_speech_trend(redis_url: str, browser: Any) -> None:
    """Silence/overtalk marks on the timeline and the speaking-rate and loudness trend per speaker, from
    events this test publishes: on the page of a live call, growing as events arrive, and on the
    ended call's page (plus call_ended's silences that no event gave). A channel name with markup
    stays text."""
    client = redis.Redis.from_url(redis_url)
    dash = Dashboard(redis_url, free_port())
    cust = '<img src=x onerror="window.__xss=5">'
    channels = ["agent", cust]
    try:
        dash.start()
        calls = CallEvents(client, call_id="dyn-call", source="file", channels=channels, labels=["neutral", "angry"])
        calls.start()
        for seq, (ch, a, b) in enumerate([("agent", 0.0, 8.0), (cust, 8.0, 20.0)]):
            client.xadd(results_key("dyn-call"), encode_entry({
                "kind": "result", "stream_id": "dyn-call", "channel": ch, "seq": seq, "start_s": a, "end_s": b,
                "label": "neutral", "confidence": 0.9, "probs": {"neutral": 0.9, "angry": 0.1}, "model": "x@1"}))
        first = [dyn_event(5.0, {"agent": 4.2, cust: None}, {"agent": -24.0, cust: None}),
                 dyn_event(10.0, {"agent": 4.6, cust: 5.5}, {"agent": -23.0, cust: -18.5})]
        calls.publish([{"kind": "silence", "start_s": 0.0, "end_s": 3.5, "duration_s": 3.5}, first[0],
                       {"kind": "overtalk", "start_s": 8.0, "end_s": 9.0, "duration_s": 1.0, "interruption": True,
                        "by": cust, "over": ["agent"], "yielded": False}, first[1]])
        browser.get(dash.base + "/")
        browser.find_element("id", "token").send_keys(TOKEN)
        browser.find_element("css selector", "form button[type=submit]").click()
        wait_until(lambda: browser.find_elements("css selector", "#live"), 10, "the overview after login")
        browser.get(dash.base + "/calls/dyn-call")
        wait_until(lambda: browser.find_element("id", "conn").text == "live", 15, "the live call page")
        spans = [("silence", 0.0, 3.5), ("overtalk", 8.0, 9.0)]
        check_marks(browser, spans, 20.0)
        check_speech(browser, first, channels, 20.0)
        tip = browser.find_element("css selector", "#timeline rect.mark.overtalk title").get_attribute("textContent")
        assert tip == f"overtalk 0:08.0\u20130:09.0 (1.0 s): {cust} came in over agent"

        # live: new events add marks and points (a repeated silence is drawn once)
        more = dyn_event(15.0, {"agent": 4.0, cust: 6.5}, {"agent": -26.0, cust: -16.0})
        calls.publish([{"kind": "silence", "start_s": 0.0, "end_s": 3.5, "duration_s": 3.5},
                       {"kind": "overtalk", "start_s": 12.0, "end_s": 12.8, "duration_s": 0.8, "interruption": False},
                       {"kind": "silence", "start_s": 16.0, "end_s": 19.5, "duration_s": 3.5}, more])
        wait_until(lambda: len(browser.find_elements("css selector", "#timeline rect.mark")) >= 4, 10, "new marks")
        wait_until(lambda: browser.find_element("css selector", "#speech-trends figure polyline.rate")
                   .get_attribute("data-points") == "3", 10, "the new trend point")
        spans += [("overtalk", 12.0, 12.8), ("silence", 16.0, 19.5)]
        check_marks(browser, spans, 20.0)
        check_speech(browser, first + [more], channels, 20.0)
        assert browser.find_element("tag name", "body").get_attribute("data-duplicate-records") is None

        # ended: the page reloads into the final rendering; call_ended's lists add the silence no event gave
        calls.end_fields["dynamics"] = {**dyn_event(24.0, {"agent": 4.0, cust: 6.5}, {"agent": -26.0, cust: -16.0}),
                                        "silences": [[0.0, 3.5], [16.0, 19.5], [21.0, 24.0]],
                                        "overtalks": [[8.0, 9.0], [12.0, 12.8]]}
        calls.end(reason="completed", duration_s=24.0, summary={})
        wait_until(lambda: browser.find_element("id", "live-state").text.startswith("ENDED"), 20, "the final page")
        check_marks(browser, spans + [("silence", 21.0, 24.0)], 24.0)
        check_speech(browser, first + [more], channels, 24.0)
        assert js(browser, "return window.__xss === undefined")
        assert fits_width(browser, 768), "the call page overflows a tablet-width window"
    finally:
        dash.stop()
        client.close()


def test_dashboard_refuses_other_hosts_without_a_token(redis_url: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "dashboard.cli", "--redis-url", redis_url, "--host", "0.0.0.0",
                           "--port", str(free_port())], env=env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1 and "refusing to listen on 0.0.0.0 without a login" in proc.stderr
    assert "Traceback" not in proc.stderr
