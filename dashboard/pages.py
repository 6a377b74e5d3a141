"""HTML of the dashboard's pages. Everything that came from a call (ids, channel names, custom
parameters, labels) is escaped here or handed to the browser as JSON that the scripts insert
with ``textContent`` only; JSON inside ``<script>`` has ``<`` escaped (:func:`reports.html.script_json`)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from dashboard.scorefmt import quarters_html
from reports.dynamics import dynamics_html, timeline_marks
from reports.html import label_colours, render_call, script_json
from reports.summary import summarise

esc = html.escape
STYLESHEET = '<link rel="stylesheet" href="/static/dashboard.css">\n'


def call_href(call_id: str) -> str:
    return "/calls/" + quote(call_id, safe="")


def nav(*, login: bool, here: str, archive: bool = False) -> str:
    """The top bar; with ``archive``, links to the History and Trends pages (``aria-current`` on ``here``)."""
    out = '<nav class="top"><a href="/" class="brand">ser-dashboard</a>'
    if archive:
        for name, href in (("History", "/history"), ("Trends", "/trends")):
            current = ' aria-current="page"' if here == name else ""
            out += f' <a href="{href}" class="section"{current}>{name}</a>'
    if here and here not in ("History", "Trends"):
        out += f' <span class="crumb">&rsaquo; {esc(here)}</span>'
    if login:
        out += ' <form method="post" action="/logout" class="logout"><button type="submit">Log out</button></form>'
    return out + "</nav>\n"


def login_page(*, next_path: str, error: str = "") -> str:
    message = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>ser-dashboard: log in</title>{STYLESHEET}</head>
<body class="login"><main>
<h1>ser-dashboard</h1>
<p>This dashboard shows live call data. Enter the dashboard token (<code>SER_DASHBOARD_TOKEN</code>).</p>
{message}<form method="post" action="/login">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{esc(next_path)}">
<button type="submit">Log in</button>
</form></main></body></html>
"""


def overview_page(snapshot: dict[str, Any], *, labels: Sequence[str], login: bool, archive: bool = False) -> str:
    data = {**snapshot, "colours": label_colours(list(labels))}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>ser-dashboard: live calls</title>{STYLESHEET}</head>
<body>
<a class="skip" href="#live-calls">Skip to live calls</a>
{nav(login=login, here="", archive=archive)}<main>
<p class="status" id="conn" role="status" aria-live="polite">connecting&hellip;</p>
<section id="live-calls" aria-labelledby="h-live"><h2 id="h-live">Live calls <span id="live-count"></span></h2>
<table class="calls" id="live"><thead><tr><th scope="col">Call</th><th scope="col">Source</th>
<th scope="col">Duration</th><th scope="col">Speakers now</th><th scope="col">Alerts</th></tr></thead>
<tbody></tbody></table><p class="empty" id="live-empty" hidden>No live calls.</p></section>
<section aria-labelledby="h-ended"><h2 id="h-ended">Recently ended</h2>
<table class="calls" id="ended"><thead><tr><th scope="col">Call</th><th scope="col">Source</th>
<th scope="col">Duration</th><th scope="col">Ended</th><th scope="col">Outcome</th></tr></thead>
<tbody></tbody></table><p class="empty" id="ended-empty" hidden>No call ended recently.</p></section>
<section aria-labelledby="h-pool"><h2 id="h-pool">Worker pool</h2><div id="pool">waiting for the pool&hellip;</div>
</section></main>
<script type="application/json" id="overview-data">{script_json(data)}</script>
<script src="/static/dashboard.js" defer></script>
</body></html>
"""


def speech_points(events: Sequence[dict[str, Any]], channels: Sequence[str]) -> list[dict[str, Any]]:
    """Each ``dynamics`` event's speaking rate and loudness per speaker, for the per-speaker trend:
    ``{"at_s", "channels": {name: {"rate_sps", "level_db"}}}`` (values as the event has them, null
    before the speaker's first measured speech), one per ``at_s``, in order."""
    out: dict[float, dict[str, Any]] = {}
    for ev in events:
        if ev.get("kind") != "dynamics" or not isinstance(ev.get("channels"), dict):
            continue
        chans = {name: {"rate_sps": ch.get("rate_sps"), "level_db": ch.get("level_db")}
                 for name, ch in ev["channels"].items() if name in channels and isinstance(ch, dict)}
        out[float(ev.get("at_s", 0.0))] = {"at_s": float(ev.get("at_s", 0.0)), "channels": chans}
    return [out[t] for t in sorted(out)]


def call_page(call_id: str, call: dict[str, Any], *, nonce: str, login: bool, archive: bool = False) -> str:
    """The call's page: :func:`reports.html.render_call` (the ``--report`` page) plus the alerts,
    the negativity trend, the speaking-rate and loudness trend (:func:`speech_points`), the
    timeline's silence/overtalk marks (:func:`reports.dynamics.timeline_marks`) and the live script;
    the summary comes from ``call_ended`` once ended. A call read from the archive
    (:func:`dashboard.archived.page_data`: ``call["archived"]``) gets its scores per quarter instead of
    the negativity trend (trend events are not archived). ``archive``: the nav links History and Trends."""
    archived = call.get("archived")
    state = call["state"] or {}
    records = call["records"]
    ended = state.get("ended") or next((e for e in call["events"] if e["kind"] == "call_ended"), None)
    channels = list(state.get("channels") or sorted({str(r["channel"]) for r in records if "channel" in r}))
    labels = list(next((e.get("labels") for e in call["events"] if e["kind"] == "call_started"), None)
                  or next((list(r["probs"]) for r in records if r.get("probs")), []))
    end_rec = next((r for r in records if r.get("kind") == "end"), None)
    duration = max([float(r.get("end_s", 0.0)) for r in records if r.get("kind") != "end"] + [0.0])
    if ended is not None:
        duration = float(ended.get("duration_s", duration))
        summary = ended.get("summary") or summarise(records, labels)
    else:
        summary = None
    if end_rec is not None:
        duration = max(duration, float(end_rec.get("duration_s", 0.0)))
    model = state.get("model") or next((str(r["model"]) for r in records if r.get("model")), "")
    params = state.get("params") or {}
    meta = f'<p class="meta">Source <b>{esc(str(state.get("source", "?")))}</b>'
    if params:
        meta += " &middot; parameters: " + ", ".join(f"<code>{esc(str(k))}</code>={esc(str(v))}"
                                                         for k, v in params.items())
    if archived is not None:
        meta += ' &middot; <span id="archived" class="archived">from the archive</span>'
    if ended is None:
        meta += ' &middot; <span id="live-state" class="state-live">LIVE</span>'
    else:
        meta += f' &middot; <span id="live-state" class="state-ended">ENDED ({esc(str(ended.get("reason")))})</span>'
    body_top = (nav(login=login, here=call_id, archive=archive)
                + '<p class="status" id="conn" role="status" aria-live="polite"></p>\n')
    after_meta = (f"{meta}</p>\n"
                  '<h2>Alerts</h2><ul id="alerts" class="alerts"><li class="none">No alert.</li></ul>\n')
    # the conversation's dynamics: the call's totals once ended, else the newest dynamics event
    dyn = ((ended or {}).get("dynamics") or (end_rec or {}).get("dynamics")
           or next((e for e in reversed(call["events"]) if e["kind"] == "dynamics"), None))
    conversation = (dynamics_html(dyn, channels, duration_s=float(dyn["duration_s"])) if dyn else
                    '<section id="conversation"><h2>Conversation</h2><p class="meta">Talk time, silences and '
                    "overtalk appear once the call's first seconds are settled.</p></section>\n")
    negativity = ('<h2>Negativity trend per speaker</h2><div id="trends" class="trends"></div>\n' if archived is None
                  else quarters_html(archived["speakers"]))
    speech = speech_points(call["events"], channels)
    body_extra = (conversation + negativity +
                  ('<h2>Speaking rate and loudness per speaker</h2><div id="speech-trends" class="trends"></div>\n'
                   if speech or archived is None else "")  # an archived call without dynamics events: none
                  + '<script src="/static/call.js" defer></script>\n')
    events = [e for e in call["events"] if e["kind"] in ("alert_opened", "alert_closed", "trend", "call_ended")]
    events += [e for e in call["events"] if e["kind"] == "dynamics"][-1:]  # the newest: the live section
    data_extra = {"call_id": call_id, "live": ended is None, "results_id": call["results_id"],
                  "events_id": call["events_id"], "events": events,
                  "marks": timeline_marks(call["events"], dyn),
                  "speech": speech}
    title = state.get("raw_call_id") or call_id  # the platform's own id when the key differs
    return render_call(records, summary, title=title, model_id=model, channels=channels, labels=labels,
                       duration_s=duration, nonce=nonce, head_extra=STYLESHEET, body_top=body_top,
                       after_meta=after_meta, body_extra=body_extra, data_extra=data_extra)


def not_found_page(call_id: str, *, archive: bool = False) -> str:
    where = ("in Redis or in the archive" if archive else
             "in Redis (results and events expire an hour after a call's last write; no archive configured)")
    back = '<a href="/history">Search the history</a> or <a href="/">the overview</a>' if archive else \
        '<a href="/">Back to the overview</a>'
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>not found</title>{STYLESHEET}'
            f'</head><body>{nav(login=False, here="", archive=archive)}<main><h1>No such call</h1><p>No call '
            f"<code>{esc(call_id)}</code> {where}.</p><p>{back}</p></main></body></html>")


def unavailable_page(message: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>unavailable</title>{STYLESHEET}'
            f'</head><body>{nav(login=False, here="")}<main><h1>Unavailable</h1><p class="error" role="alert">'
            f"{esc(message)}</p></main></body></html>")
