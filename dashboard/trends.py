"""HTML of the Trends page (``/trends``): per agent, queue or tenant, per day or week, the archived calls'
mean customer score, negative share, interruptions per call, non-talk share and count
(:func:`archive.queries.trends`, with the History page's filter set), as one inline SVG line chart (no
script, no library) and the table of every figure. Group names are escaped; each line is named in text at
its end and in the legend, so colour is never the only cue.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from archive.queries import TREND_BY, TREND_PERIODS
from archive.scores import SCALE
from dashboard.history import Query, error_html, filter_fields, page_head, read_filter, when
from dashboard.pages import nav
from dashboard.scorefmt import pct, score_html
from dashboard.settings import TRENDS_DAYS, TRENDS_MAX_LINES

esc = html.escape
#: What the chart can show: name -> (title, row field, fixed range or None: 0..the largest value).
METRICS: dict[str, tuple[str, str, tuple[float, float] | None]] = {
    "customer_score": ("Mean customer score", "customer_score", (-SCALE, SCALE)),
    "negative_share": ("Customer negative share", "customer_negative_share", (0.0, 1.0)),
    "interruptions": ("Interruptions per call", "interruptions_per_call", None),
    "non_talk_share": ("Non-talk share", "non_talk_share", (0.0, 1.0)),
    "calls": ("Calls", "calls", None),
}
#: Line colours (Okabe-Ito, distinguishable with colour-vision deficiencies), in order of calls.
COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442")
W, H, LEFT, RIGHT, TOP, BOTTOM = 900, 300, 56, 160, 12, 44
LABEL_GAP = 14  # least vertical distance between two line names (SVG units)
NONE_GROUP = "(none)"
#: The form's filter fields shown at once (after what to compare); the others under "More filters".
TRENDS_MAIN = ("since", "until", "queue")


def read_trends(params: Mapping[str, str], *, now: float | None = None) -> Query:
    """The Trends query: the filter (default: the last :data:`TRENDS_DAYS` days) and ``by``, ``period``, ``metric``."""
    q = read_filter(params, days=TRENDS_DAYS, now=now)
    q.extra = {"by": "agent", "period": "day", "metric": "customer_score"}
    for name, choices in (("by", TREND_BY), ("period", TREND_PERIODS), ("metric", tuple(METRICS))):
        value = str(params.get(name, "")).strip() or q.extra[name]
        if value not in choices:
            q.error = q.error or f"{name}: must be one of {', '.join(choices)}, got {value!r}"
        else:
            q.extra[name] = value
    return q


def group_of(row: Mapping[str, Any], by: str) -> str:
    value = row.get(by)
    return NONE_GROUP if value is None or value == "" else str(value)


def period_of(row: Mapping[str, Any]) -> float:
    return float(row["period_ts"])


def period_text(ts: float, period: str) -> str:
    day = datetime.fromtimestamp(ts, UTC).date().isoformat()
    return f"week of {day}" if period == "week" else day


def _number(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _nice(top: float) -> float:
    if top <= 0:
        return 1.0
    step = 10 ** math.floor(math.log10(top))
    return next(m * step for m in (1, 2, 2.5, 5, 10) if m * step >= top)


def _fmt(metric: str, v: float) -> str:
    if metric in ("negative_share", "non_talk_share"):
        return pct(v)
    if metric == "customer_score":
        return f"{v:+.1f}" if round(v, 1) != 0 else "0"
    return f"{v:.0f}" if metric == "calls" else f"{v:.1f}"


def chart(rows: Sequence[Mapping[str, Any]], *, by: str, period: str, metric: str) -> str:
    """The SVG: x = the periods in order (evenly spaced), y = the metric; a line per group (the
    :data:`TRENDS_MAX_LINES` groups with most calls), a point per (group, period) with its value as tooltip."""
    title, field, fixed = METRICS[metric]
    periods = sorted({period_of(r) for r in rows})
    groups = ranked(rows, by)[0][:TRENDS_MAX_LINES]
    values = [v for r in rows if (v := _number(r.get(field))) is not None]
    lo, hi = fixed if fixed is not None else (0.0, _nice(max(values, default=0.0)))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (pw / 2 if len(periods) == 1 else pw * i / (len(periods) - 1))

    def y(v: float) -> float:
        return TOP + ph * (1 - (max(lo, min(hi, v)) - lo) / (hi - lo))

    out = [f'<svg id="trend-chart" class="chart" viewBox="0 0 {W} {H}" role="img" data-metric="{metric}" '
           f'data-lines="{len(groups)}" data-periods="{len(periods)}" aria-labelledby="chart-title">']
    for k in range(5):  # horizontal grid and the y scale
        v = lo + (hi - lo) * k / 4
        out.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
                   f'<text class="tick" x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{esc(_fmt(metric, v))}'
                   "</text>")
    if lo < 0 < hi:
        out.append(f'<line class="zero" x1="{LEFT}" x2="{W - RIGHT}" y1="{y(0):.1f}" y2="{y(0):.1f}"/>')
    every = max(1, math.ceil(len(periods) / 10))
    for i, p in enumerate(periods):
        if i % every == 0 or i == len(periods) - 1:
            day = datetime.fromtimestamp(p, UTC).strftime("%m-%d")
            out.append(f'<text class="tick" x="{x(i):.1f}" y="{H - BOTTOM + 18}" text-anchor="middle">{day}</text>')
    out.append(f'<text class="tick" x="{LEFT + pw / 2:.1f}" y="{H - 6}" text-anchor="middle">'
               f"{'week starting (UTC, Monday)' if period == 'week' else 'day (UTC)'}</text>")
    index = {p: i for i, p in enumerate(periods)}
    ends: list[tuple[float, float, str, str]] = []  # (y, x, colour, name) of each line's last point
    for n, group in enumerate(groups):
        colour = COLOURS[n % len(COLOURS)]
        pts = sorted((index[period_of(r)], v, r) for r in rows if group_of(r, by) == group
                     and (v := _number(r.get(field))) is not None)
        out.append(f'<g class="series" data-group="{esc(group)}" data-points="{len(pts)}">')
        if len(pts) > 1:
            line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v, _ in pts)
            out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, v, r in pts:
            tip = (f"{group}, {period_text(periods[i], period)}: {title.lower()} {_fmt(metric, v)} "
                   f"({int(r.get('calls') or 0)} call(s))")
            out.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="4" fill="{colour}" tabindex="0" '
                       f'aria-label="{esc(tip)}"><title>{esc(tip)}</title></circle>')
        out.append("</g>")
        if pts:
            ends.append((y(pts[-1][1]), x(pts[-1][0]), colour, group))
    last_y = -math.inf
    for ey, ex, colour, group in sorted(ends):  # names at the lines' ends, pushed apart so none overlaps
        last_y = max(ey + 4, last_y + LABEL_GAP)
        out.append(f'<text class="end-label" x="{ex + 8:.1f}" y="{last_y:.1f}" fill="{colour}">'
                   f"{esc(group[:22])}</text>")
    return "".join(out) + "</svg>"


def ranked(rows: Sequence[Mapping[str, Any]], by: str) -> tuple[list[str], dict[str, int]]:
    """The groups, most calls first (then by name), and each one's calls."""
    totals: dict[str, int] = {}
    for r in rows:
        totals[group_of(r, by)] = totals.get(group_of(r, by), 0) + int(r.get("calls") or 0)
    return sorted(totals, key=lambda g: (-totals[g], g)), totals


def _legend(rows: Sequence[Mapping[str, Any]], q: Query) -> tuple[str, int]:
    """The lines' names and calls, each linked to its calls on the History page (same filter)."""
    by = q.extra["by"]
    groups, totals = ranked(rows, by)
    shown = groups[:TRENDS_MAX_LINES]
    items = []
    for n, g in enumerate(shown):
        text = f"{esc(g)} ({totals[g]} call(s))"
        if g != NONE_GROUP:
            params = {k: v for k, v in q.values.items() if v or k == "since"}
            text = f'<a href="/history?{esc(urlencode({**params, by: g}))}">{text}</a>'
        items.append(f'<li><span class="line-key" style="background:{COLOURS[n % len(COLOURS)]}"></span>{text}</li>')
    return f'<ul class="legend-list" id="chart-legend">{"".join(items)}</ul>', len(groups) - len(shown)


def _table(rows: Sequence[Mapping[str, Any]], *, by: str, period: str) -> str:
    body = []
    for r in sorted(rows, key=lambda r: (group_of(r, by), period_of(r))):
        body.append(f'<tr><th scope="row">{esc(group_of(r, by))}</th><td>{period_text(period_of(r), period)}</td>'
                    f'<td class="num">{int(r.get("calls") or 0)}</td>'
                    f'<td class="num">{score_html(_number(r.get("customer_score")))}</td>'
                    f'<td class="num">{pct(_number(r.get("customer_negative_share")))}</td>'
                    f'<td class="num">{_opt(_number(r.get("interruptions_per_call")))}</td>'
                    f'<td class="num">{pct(_number(r.get("non_talk_share")))}</td></tr>')
    return ('<div class="scroll"><table class="calls" id="trend-table"><thead><tr>'
            f'<th scope="col">{esc(by.capitalize())}</th><th scope="col">{esc(period.capitalize())}</th>'
            '<th scope="col">Calls</th><th scope="col">Mean customer score</th><th scope="col">Negative share</th>'
            '<th scope="col">Interruptions per call</th><th scope="col">Non-talk share</th></tr></thead><tbody>'
            + "\n".join(body) + "</tbody></table></div>\n")


def _opt(v: float | None) -> str:
    return "\u2014" if v is None else f"{v:.1f}"


def _choices(name: str, label: str, value: str, options: Sequence[tuple[str, str]]) -> str:
    opts = "".join(f'<option value="{v}"{" selected" if v == value else ""}>{esc(t)}</option>' for v, t in options)
    return f'<label>{esc(label)}<select name="{name}" id="sel-{name}">{opts}</select></label>'


def trends_page(q: Query, rows: list[dict[str, Any]] | None, *, login: bool) -> str:
    """The page: what to compare and the filter, then the chart, legend and table (None: invalid query)."""
    by, period, metric = q.extra["by"], q.extra["period"], q.extra["metric"]
    lead = (_choices("by", "Compare", by, [(b, f"per {b}") for b in TREND_BY])
            + _choices("period", "Per", period, [(p, p) for p in TREND_PERIODS])
            + _choices("metric", "Show", metric, [(k, v[0]) for k, v in METRICS.items()]))
    out = [page_head("trends"), '<a class="skip" href="#chart">Skip to the chart</a>\n',
           nav(login=login, here="Trends", archive=True), "<main>\n<h1>Trends</h1>\n",
           '<form method="get" action="/trends" class="filters" aria-label="What to compare, and filters">\n',
           filter_fields(q.values, main=TRENDS_MAIN, lead=lead),
           '<div class="actions"><button type="submit">Show</button> <a href="/trends">'
           f"Reset (last {TRENDS_DAYS} days)</a></div></form>\n", error_html(q.error),
           '<section id="chart" aria-labelledby="chart-title">']
    if rows is None:
        out.append('<h2 id="chart-title">Chart</h2><p class="empty">Fix the filter above to see trends.</p>')
    elif not rows:
        out.append('<h2 id="chart-title">Chart</h2><p class="empty" id="no-trends">No archived call matches these '
                   "filters in this time range. Widen the time range (From/To) or clear a filter.</p>")
    else:
        title = METRICS[metric][0]
        first, last = min(period_of(r) for r in rows), max(period_of(r) for r in rows)
        legend, more = _legend(rows, q)
        note = (f'<p class="meta">{more} more {esc(by)} value(s) with fewer calls: in the table below.</p>'
                if more else "")
        out.append(f'<h2 id="chart-title">{esc(title)} per {esc(by)} and {esc(period)}, {when(first)[:10]} to '
                   f"{when(last)[:10]} (UTC)</h2>\n<figure class=\"chart\">"
                   f"{chart(rows, by=by, period=period, metric=metric)}"
                   f"<figcaption>{legend}</figcaption></figure>\n{note}"
                   f'<h2 id="h-table">Figures</h2>\n{_table(rows, by=by, period=period)}'
                   '<p class="meta">Mean customer score: -5 (negative) to +5 (positive); negative share: the '
                   "customer's share of negative emotion; non-talk share: the part of the call nobody spoke.</p>")
    out.append("</section></main></body></html>\n")
    return "".join(out)
