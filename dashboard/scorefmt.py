"""Archived scores as text and colour (History, Trends and the archived call page): a -5..+5 score is
shown signed (``+1.5``) and coloured by its side, a trend by a word and an arrow, so that neither depends on
colour alone (archive/scores.py defines them; docs/archive.md, "Scores")."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from archive.scores import SCALE

esc = html.escape
#: Trend classes (archive.scores.TRENDS) as text with an arrow.
TREND_TEXT = {"Improving": "\u2191 Improving", "SlightlyImproving": "\u2197 Slightly improving",
              "NoChange": "\u2192 No change", "SlightlyDeclining": "\u2198 Slightly declining",
              "Declining": "\u2193 Declining", "NotCalculated": "\u2013 Not calculated"}
#: A score at or above POSITIVE_AT is coloured positive, at or below -POSITIVE_AT negative.
POSITIVE_AT = 1.0


def side(score: float) -> str:
    return "pos" if score >= POSITIVE_AT else "neg" if score <= -POSITIVE_AT else "mid"


def score_html(score: Any) -> str:
    """A -5..+5 score as signed text, coloured by its side (a dash when unknown)."""
    if score is None or not math.isfinite(float(score)):
        return '<span class="score none" title="no speech scored">\u2014</span>'
    s = float(score)
    word = {"pos": "positive", "neg": "negative", "mid": "neutral"}[side(s)]
    shown = f"{s:+.1f}" if round(s, 1) != 0 else "0.0"
    return f'<span class="score {side(s)}" title="{word}, -5..+5">{shown}</span>'


def trend_html(trend: Any) -> str:
    if not trend:
        return '<span class="trend none">\u2014</span>'
    name = str(trend)
    cls = "up" if name.endswith("Improving") else "down" if name.endswith("Declining") else "flat"
    return f'<span class="trend {cls}" data-trend="{esc(name)}">{esc(TREND_TEXT.get(name, name))}</span>'


def pct(value: Any) -> str:
    return "\u2014" if value is None else f"{100 * float(value):.0f}%"


def _bars(quarters: Sequence[Any], label: str) -> str:
    """Four bars around a zero line (inline SVG, 0..SCALE up and down), a dashed stub where a quarter had no
    speech; each bar has its value as a tooltip."""
    w, h, mid = 160, 48, 24
    parts = [f'<svg class="quarters" viewBox="0 0 {w} {h}" role="img" aria-label="{esc(label)}">',
             f'<line x1="0" x2="{w}" y1="{mid}" y2="{mid}" class="zero"/>']
    for i, q in enumerate(list(quarters)[:4]):
        x = 8 + i * 38
        if q is None:
            parts.append(f'<rect x="{x}" y="{mid - 1}" width="30" height="2" class="q none" data-quarter="{i + 1}">'
                         f"<title>Q{i + 1}: no speech</title></rect>")
            continue
        v = max(-SCALE, min(SCALE, float(q)))
        bar = abs(v) / SCALE * (mid - 2)
        y = mid - bar if v >= 0 else mid
        parts.append(f'<rect x="{x}" y="{y:.1f}" width="30" height="{max(bar, 1):.1f}" class="q {side(v)}" '
                     f'data-quarter="{i + 1}" data-score="{v:.2f}"><title>Q{i + 1}: {v:+.1f}</title></rect>')
    return "".join(parts) + "</svg>"


def quarters_html(speakers: Sequence[Mapping[str, Any]]) -> str:
    """The archived call's scores per speaker: overall, each quarter of the call, trend, negative share."""
    if not speakers:
        return ('<section id="quarters"><h2>Scores per quarter</h2><p class="meta">No speaker was scored.</p>'
                "</section>\n")
    rows = []
    for sp in speakers:
        name = str(sp.get("channel", ""))
        quarters = list(sp.get("quarters") or [None] * 4) + [None] * 4
        role = (f' <span class="role">({esc(str(sp["role"]))})</span>' if sp.get("role") and sp["role"] != name
                else "")
        cells = "".join(f'<td class="num q{i + 1}">{score_html(q)}</td>' for i, q in enumerate(quarters[:4]))
        rows.append(f'<tr data-channel="{esc(name)}"><th scope="row">{esc(name)}{role}</th>'
                    f'<td class="num overall">{score_html(sp.get("score"))}</td>{cells}'
                    f'<td>{trend_html(sp.get("trend"))}</td><td class="num">{pct(sp.get("negative_share"))}</td>'
                    f'<td>{_bars(quarters[:4], name + " score per quarter")}</td></tr>')
    return ('<section id="quarters"><h2>Scores per quarter</h2>\n<table class="calls quarters"><thead><tr>'
            '<th scope="col">Speaker</th><th scope="col">Whole call</th><th scope="col">Q1</th><th scope="col">Q2</th>'
            '<th scope="col">Q3</th><th scope="col">Q4</th><th scope="col">Trend</th>'
            '<th scope="col">Negative share</th><th scope="col">Per quarter</th></tr></thead><tbody>\n'
            + "\n".join(rows) + "</tbody></table>\n"
            '<p class="meta">Emotion score -5 (negative) to +5 (positive), duration-weighted over each quarter of the '
            "call; trend: the last quarter with speech against the first (docs/archive.md, \"Scores\").</p>"
            "</section>\n")
