"""HTML of the History page (``/history``: archived calls, filtered, sorted, paged) and what the History and
Trends pages share: the query string read into ONE filter set (:func:`archive.filters.parse`, as
``ser-calls search``), the filter form, and text + colour for scores and trends.

Everything that came from a call (ids, agents, queues, tenants) is escaped here. No script: sorting and
paging are links, the form is a plain GET form, so the pages work with the keyboard and without JavaScript.
"""

from __future__ import annotations

import html
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from archive import filters
from archive.filters import CallFilter
from archive.queries import Page
from archive.scores import TRENDS
from dashboard.pages import STYLESHEET, call_href, nav
from dashboard.scorefmt import TREND_TEXT, pct, score_html, trend_html
from dashboard.settings import HISTORY_DAYS, HISTORY_MAX_LIMIT, HISTORY_PAGE_SIZE

esc = html.escape
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Shown (404) by /history and /trends when the dashboard runs without --archive.
NO_ARCHIVE = ("no call archive: start ser-dashboard with --archive URL (or SER_ARCHIVE_URL) to see History "
              "and Trends\n")
#: The History table: (header, sort key of archive.filters.SORTS or "" when it does not sort).
COLUMNS = (("Call", ""), ("Started (UTC)", "started"), ("Duration", "duration"), ("Agent", ""), ("Queue", ""),
           ("Customer score", "customer_score"), ("Customer trend", ""),
           ("Negative share", "customer_negative_share"), ("Interruptions", "interruptions"),
           ("Non-talk", "non_talk_share"), ("Alerts", ""))


@dataclass
class Query:
    """A History/Trends query string read: the form's values, the filter (None when a value is invalid)
    and what is wrong (one line naming the parameter)."""

    values: dict[str, str]
    flt: CallFilter | None
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def default_since(days: int, *, now: float | None = None) -> str:
    """The date (UTC, ISO) ``days`` days back, today included: the default start of the pages' range."""
    today = datetime.fromtimestamp(now if now is not None else datetime.now(UTC).timestamp(), UTC).date()
    return (today - timedelta(days=days - 1)).isoformat()


def read_filter(params: Mapping[str, str], *, days: int = HISTORY_DAYS, now: float | None = None) -> Query:
    """The filter of a query string; ``since`` defaults to the last ``days`` days when the query string has
    no ``since`` at all (an empty ``since`` from the form means no lower bound)."""
    values = {name: str(params.get(name, "")).strip() for name in filters.PARAMS}
    if "since" not in params:
        values["since"] = default_since(days, now=now)
    try:
        return Query(values, filters.parse(values))
    except ValueError as exc:
        return Query(values, None, str(exc))


def whole(params: Mapping[str, str], name: str, default: int, lowest: int, highest: int) -> int:
    """A whole-number parameter in lowest..highest; ValueError naming it."""
    text = str(params.get(name, "")).strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 9 or not lowest <= int(text) <= highest:
        raise ValueError(f"{name}: must be a whole number in {lowest}..{highest}, got {text!r}")
    return int(text)


def read_history(params: Mapping[str, str], *, now: float | None = None) -> Query:
    """The History page's query: the filter, and ``sort``, ``order`` (asc|desc), ``page`` (from 1), ``limit``."""
    q = read_filter(params, now=now)
    sort = str(params.get("sort", "")).strip() or "started"
    order = str(params.get("order", "")).strip() or "desc"
    q.extra = {"sort": "started", "order": "desc", "page": 1, "limit": HISTORY_PAGE_SIZE}
    try:
        if sort not in filters.SORTS:
            raise ValueError(f"sort: must be one of {', '.join(filters.SORTS)}, got {sort!r}")
        if order not in ("asc", "desc"):
            raise ValueError(f"order: must be asc or desc, got {order!r}")
        q.extra = {"sort": sort, "order": order, "page": whole(params, "page", 1, 1, 10**6),
                   "limit": whole(params, "limit", HISTORY_PAGE_SIZE, 1, HISTORY_MAX_LIMIT)}
    except ValueError as exc:
        q.error = q.error or str(exc)
    return q


def clock(seconds: Any) -> str:
    if seconds is None:
        return "\u2014"
    t = int(round(float(seconds)))
    h, rest = divmod(t, 3600)
    return (f"{h}:{rest // 60:02d}" if h else f"{rest // 60}") + f":{rest % 60:02d}"


def when(ts: Any) -> str:
    return "\u2014" if ts is None else datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M")


def _text(name: str, label: str, value: str, *, kind: str = "text", attrs: str = "") -> str:
    return (f'<label>{esc(label)}<input name="{name}" type="{kind}" value="{esc(value)}"{attrs}></label>')


def _select(name: str, label: str, value: str, options: Sequence[tuple[str, str]]) -> str:
    opts = "".join(f'<option value="{esc(v)}"{" selected" if v == value else ""}>{esc(t)}</option>'
                   for v, t in options)
    return f'<label>{esc(label)}<select name="{name}">{opts}</select></label>'


def _date_kind(value: str) -> str:
    """A date picker for a date (or nothing); a text field keeps any other time a link gave (ISO date-time,
    unix seconds), which a date picker would blank."""
    return "date" if not value or DATE.fullmatch(value) else "text"


#: The History form's fields shown at once; the others are folded under "More filters".
HISTORY_MAIN = ("since", "until", "agent", "queue", "customer_score_min", "customer_score_max", "trend", "alert_rule")


def filter_fields(values: Mapping[str, str], *, main: Sequence[str] = HISTORY_MAIN, lead: str = "") -> str:
    """The filter form's fields (every parameter of :func:`archive.filters.parse`): ``main`` ones shown
    after ``lead`` (more fields, HTML), the rest folded under "More filters" (open when one of them is set)."""
    v = values
    score = ' step="0.1" min="-5" max="5"'
    share = ' step="0.01" min="0" max="1"'
    fields_html = {
        "since": _text("since", "From (UTC date)", v["since"], kind=_date_kind(v["since"])),
        "until": _text("until", "To (UTC date, included)", v["until"], kind=_date_kind(v["until"])),
        "agent": _text("agent", "Agent", v["agent"]), "queue": _text("queue", "Queue", v["queue"]),
        "customer_score_min": _text("customer_score_min", "Customer score \u2265", v["customer_score_min"],
                                    kind="number", attrs=score),
        "customer_score_max": _text("customer_score_max", "Customer score \u2264", v["customer_score_max"],
                                    kind="number", attrs=score),
        "trend": _select("trend", "Customer trend", v["trend"], [("", "any")] + [(t, TREND_TEXT[t]) for t in TRENDS]),
        "alert_rule": _text("alert_rule", "Alert fired (rule)", v["alert_rule"]),
        "tenant": _text("tenant", "Tenant", v["tenant"]), "direction": _text("direction", "Direction", v["direction"]),
        "agent_score_min": _text("agent_score_min", "Agent score \u2265", v["agent_score_min"], kind="number",
                                 attrs=score),
        "agent_score_max": _text("agent_score_max", "Agent score \u2264", v["agent_score_max"], kind="number",
                                 attrs=score),
        "label": _text("label", "Label (e.g. angry)", v["label"]),
        "label_share_min": _text("label_share_min", "its share \u2265 (0..1)", v["label_share_min"], kind="number",
                                 attrs=share),
        "label_role": _select("label_role", "of", v["label_role"], [("", "any speaker"), ("customer", "the customer"),
                                                                    ("agent", "the agent")]),
        "interruptions_min": _text("interruptions_min", "Interruptions \u2265", v["interruptions_min"], kind="number",
                                   attrs=' step="1" min="0"'),
        "non_talk_share_min": _text("non_talk_share_min", "Non-talk share \u2265", v["non_talk_share_min"],
                                    kind="number", attrs=share),
        "non_talk_share_max": _text("non_talk_share_max", "Non-talk share \u2264", v["non_talk_share_max"],
                                    kind="number", attrs=share),
        "duration_min": _text("duration_min", "Duration \u2265 (s)", v["duration_min"], kind="number",
                              attrs=' step="any" min="0"'),
        "duration_max": _text("duration_max", "Duration \u2264 (s)", v["duration_max"], kind="number",
                              attrs=' step="any" min="0"'),
        "model_version": _text("model_version", "Model version", v["model_version"]),
        "status": _select("status", "Status", v["status"], [("", "any"), ("ended", "ended"), ("live", "live")]),
    }
    more = [name for name in fields_html if name not in main]
    is_open = " open" if any(v[n] for n in more) else ""
    return (f'<div class="fields">{lead}{"".join(fields_html[n] for n in main)}</div>\n<details class="more"{is_open}>'
            f'<summary>More filters</summary><div class="fields">{"".join(fields_html[n] for n in more)}</div>'
            "</details>\n")


def page_head(title: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1">\n<title>ser-dashboard: {esc(title)}</title>'
            f"{STYLESHEET}</head>\n<body>\n")


def error_html(error: str) -> str:
    return f'<p class="error" id="filter-error" role="alert">Invalid filter: {esc(error)}</p>\n' if error else ""


def _href(values: Mapping[str, str], **extra: Any) -> str:
    """``/history`` with the form's non-empty values (an empty ``since`` kept: it means "all time")."""
    params = {k: v for k, v in values.items() if v or k == "since"}
    params.update({k: str(v) for k, v in extra.items()})
    return "/history?" + urlencode(params)


def _header(title: str, key: str, q: Query) -> str:
    if not key:
        return f'<th scope="col">{esc(title)}</th>'
    current = q.extra["sort"] == key
    order = q.extra["order"]
    nxt = ("asc" if order == "desc" else "desc") if current else "desc"
    aria = f' aria-sort="{"descending" if order == "desc" else "ascending"}"' if current else ""
    arrow = ("\u25bc" if order == "desc" else "\u25b2") if current else ""
    hint = f"sort by {title.lower()}, " + ("highest first" if nxt == "desc" else "lowest first")
    href = esc(_href(q.values, sort=key, order=nxt))
    return (f'<th scope="col" class="sortable"{aria} data-sort="{key}"><a href="{href}" title="{esc(hint)}">'
            f'{esc(title)}<span class="arrow" aria-hidden="true">{arrow}</span></a></th>')


def _row(r: Mapping[str, Any]) -> str:
    call_id = str(r["call_id"])
    shown = str(r.get("raw_id") or call_id)
    alerts = int(r.get("alerts_fired") or 0)
    alert_cell = f'<span class="alert-count">\u26a0 {alerts}</span>' if alerts else "0"
    return (f'<tr data-call-id="{esc(call_id)}"><td><a class="call-id" href="{esc(call_href(call_id))}">{esc(shown)}'
            f'</a></td><td class="num">{when(r.get("started_ts"))}</td>'
            f'<td class="num">{clock(r.get("duration_s"))}</td>'
            f'<td>{esc(str(r.get("agent") or ""))}</td><td>{esc(str(r.get("queue") or ""))}</td>'
            f'<td class="num">{score_html(r.get("customer_score"))}</td><td>{trend_html(r.get("customer_trend"))}</td>'
            f'<td class="num">{pct(r.get("customer_negative_share"))}</td>'
            f'<td class="num">{"" if r.get("interruptions") is None else int(r["interruptions"])}</td>'
            f'<td class="num">{pct(r.get("non_talk_share"))}</td><td class="num">{alert_cell}</td></tr>')


def cli_command(q: Query) -> str:
    """The ``ser-calls search`` command line that lists the same page (its filter options are the query
    string's names with ``-`` for ``_``), shell-quoted."""
    args = ["ser-calls", "search"]
    for name in filters.PARAMS:
        if q.values.get(name):
            args += [f"--{name.replace('_', '-')}", q.values[name]]
    if q.extra["sort"] != "started":
        args += ["--sort", q.extra["sort"]]
    if q.extra["order"] == "asc":
        args.append("--asc")
    if q.extra["limit"] != HISTORY_PAGE_SIZE:
        args += ["--limit", str(q.extra["limit"])]
    if q.extra["page"] > 1:
        args += ["--page", str(q.extra["page"])]
    return " ".join(shlex.quote(a) for a in args)


def _pager(q: Query, page: Page) -> str:
    pages = max(1, math.ceil(page.total / page.limit))
    number = q.extra["page"]
    keep = {"sort": q.extra["sort"], "order": q.extra["order"]}
    if page.limit != HISTORY_PAGE_SIZE:
        keep["limit"] = page.limit
    prev = (f'<a rel="prev" id="prev-page" href="{esc(_href(q.values, **keep, page=number - 1))}">&lsaquo; Previous</a>'
            if number > 1 else '<span class="disabled">&lsaquo; Previous</span>')
    nxt = (f'<a rel="next" id="next-page" href="{esc(_href(q.values, **keep, page=number + 1))}">Next &rsaquo;</a>'
           if number < pages else '<span class="disabled">Next &rsaquo;</span>')
    return (f'<nav class="pager" aria-label="Pages">{prev} <span id="page-of">Page {number} of {pages}</span> '
            f"{nxt}</nav>\n")


def history_page(q: Query, page: Page | None, *, login: bool) -> str:
    """The page: the filter form, then the calls of ``page`` (None when the query is invalid)."""
    hidden = "".join(f'<input type="hidden" name="{k}" value="{esc(str(q.extra[k]))}">' for k in ("sort", "order")
                     if q.extra.get(k))
    out = [page_head("call history"), '<a class="skip" href="#results">Skip to the results</a>\n',
           nav(login=login, here="History", archive=True), "<main>\n<h1>Call history</h1>\n",
           '<form method="get" action="/history" class="filters" aria-label="Filters">\n', filter_fields(q.values),
           f'{hidden}<div class="actions"><button type="submit">Search</button> <a href="/history">Reset '
           f"(last {HISTORY_DAYS} days)</a></div></form>\n", error_html(q.error),
           '<section id="results" aria-labelledby="h-results">']
    if page is None:
        out.append('<h2 id="h-results">Calls</h2><p class="empty">Fix the filter above to see calls.</p>')
    elif not page.rows:
        span = ("in this time range" if q.values.get("since") or q.values.get("until") else "")
        out.append(f'<h2 id="h-results">Calls</h2><p class="empty" id="no-calls">No archived call matches these '
                   f"filters {span}. Widen the time range (From/To) or clear a filter.</p>")
    else:
        first = page.offset + 1
        out.append(f'<h2 id="h-results">Calls <span class="count" id="result-count" role="status">{first}&ndash;'
                   f"{page.offset + len(page.rows)} of {page.total}</span></h2>\n"
                   '<div class="scroll"><table class="calls history" id="history"><thead><tr>'
                   + "".join(_header(t, k, q) for t, k in COLUMNS) + "</tr></thead><tbody>\n"
                   + "\n".join(_row(r) for r in page.rows) + "</tbody></table></div>\n" + _pager(q, page)
                   + '<p class="meta">Scores: the customer\'s emotion, -5 (negative) to +5 (positive); trend: its last '
                   "quarter of the call against its first. Negative share: the customer's share of negative "
                   "emotion. Times in UTC.</p>\n"
                   f'<p class="meta">The same on the command line: <code id="cli">{esc(cli_command(q))}</code> '
                   "(<code>ser-calls export</code> takes the same filters).</p>")
    out.append("</section></main></body></html>\n")
    return "".join(out)
