"""The "Conversation" section of a call's page: talk time and share per speaker, non-talk time,
silences and overtalk on a strip over the call's time line (server-side SVG: no script needed).

``dyn`` is the call's dynamics as the ``end`` record and ``call_ended`` carry them
(``producer.dynamics.Dynamics.episodes_summary``; schema: docs/pipeline.md, "Call events").
:func:`timeline_marks` turns a call's ``silence``/``overtalk`` events (and those lists) into the
marks the timeline (:mod:`reports.html`) draws under the speakers' lanes.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from callevents.schema import OVERTALK, SILENCE

SILENCE_COLOUR = "#9e9e9e"
OVERTALK_COLOUR = "#d32f2f"


def _mark(kind: str, start: Any, end: Any) -> dict[str, Any] | None:
    try:
        a, b = float(start), float(end)
    except (TypeError, ValueError):
        return None
    return {"kind": kind, "start_s": a, "end_s": b} if b >= a >= 0 else None


def timeline_marks(events: Sequence[Mapping[str, Any]], dyn: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The timeline's marks: ``{"kind": "silence"|"overtalk", "start_s", "end_s"}`` from the call's
    ``silence``/``overtalk`` events (an overtalk that was an interruption also has ``by``, ``over``
    and ``yielded``), plus the ``silences``/``overtalks`` of ``dyn`` (the call's totals) that no event
    gave (an events stream trimmed at its cap); one per (kind, start, end), by start."""
    out: dict[tuple[str, float, float], dict[str, Any]] = {}
    for ev in events:
        kind = ev.get("kind")
        if kind not in (SILENCE, OVERTALK):
            continue
        mark = _mark(str(kind), ev.get("start_s"), ev.get("end_s"))
        if mark is None:
            continue
        if kind == OVERTALK and ev.get("interruption"):
            mark.update(by=str(ev.get("by", "")), over=[str(c) for c in ev.get("over") or []],
                        yielded=bool(ev.get("yielded")))
        out.setdefault((mark["kind"], mark["start_s"], mark["end_s"]), mark)
    for kind, key in ((SILENCE, "silences"), (OVERTALK, "overtalks")):
        for span in (dyn or {}).get(key) or []:
            mark = _mark(kind, *span) if isinstance(span, list | tuple) and len(span) == 2 else None
            if mark is not None:
                out.setdefault((kind, mark["start_s"], mark["end_s"]), mark)
    return sorted(out.values(), key=lambda m: (m["start_s"], m["kind"]))


def _strip(dyn: Mapping[str, Any], duration_s: float) -> str:
    if duration_s <= 0:
        return ""
    rects = []
    for kind, colour, spans in (("silence", SILENCE_COLOUR, dyn.get("silences") or []),
                                ("overtalk", OVERTALK_COLOUR, dyn.get("overtalks") or [])):
        for a, b in spans:
            x, w = 100 * a / duration_s, max(0.2, 100 * (b - a) / duration_s)
            rects.append(f'<rect class="{kind}" x="{x:.3f}%" y="0" width="{w:.3f}%" height="14" fill="{colour}">'
                         f"<title>{kind} {a:.1f}&ndash;{b:.1f} s ({b - a:.1f} s)</title></rect>")
    return ('<svg id="conversation-strip" width="100%" height="14" role="img" '
            'aria-label="silences and overtalk over the call" style="background:#e8f5e9;border-radius:3px">'
            + "".join(rects) + "</svg>")


def dynamics_html(dyn: Mapping[str, Any] | None, channels: Sequence[str], *, duration_s: float) -> str:
    """The section's HTML, or "" when the call has no dynamics (an older producer)."""
    if not dyn:
        return ""
    esc = html.escape
    rows = []
    two = "overtalk" in dyn
    for name in channels:
        ch = (dyn.get("channels") or {}).get(name)
        if ch is None:
            continue
        extra = (f"<td>{ch.get('interruptions', 0)}</td><td>{ch.get('yielded', 0)}</td>" if two else "")
        level = ch.get("level_db")
        rate = ch.get("rate_sps")
        extra += (f'<td class="level">{"&ndash;" if level is None else f"{level:.1f} LKFS"}</td>'
                  f'<td class="raised">{ch.get("raised_s", 0.0):.1f} s</td>'
                  f'<td class="rate">{"&ndash;" if rate is None else f"{rate:.1f}"}</td>')
        rows.append(f'<tr data-channel="{esc(name)}"><td>{esc(name)}</td><td class="talk">{ch["talk_s"]:.1f} s</td>'
                    f'<td class="share"><span class="talkbar" style="width:{100 * ch["talk_share"]:.1f}px"></span> '
                    f'{100 * ch["talk_share"]:.0f}%</td>{extra}</tr>')
    head = ("<th>interruptions made</th><th>the other yielded</th>" if two else "") + \
        "<th>speech level</th><th>raised voice</th><th>syllables/s</th>"
    sil = dyn["silence"]
    facts = [f'non-talk <b id="non-talk">{dyn["non_talk_s"]:.1f} s</b>',
             f'<b id="silence-count">{sil["count"]}</b> silence(s) of {sil["min_s"]:g} s or more '
             f'({sil["total_s"]:.1f} s, longest {sil["longest_s"]:.1f} s)']
    if two:
        facts.append(f'<b id="overtalk-count">{dyn["overtalk"]["count"]}</b> overtalk(s) '
                     f'({dyn["overtalk"]["total_s"]:.1f} s)')
    legend = (f'<span><span class="swatch" style="background:{SILENCE_COLOUR}"></span>silence</span>'
              + (f'<span><span class="swatch" style="background:{OVERTALK_COLOUR}"></span>overtalk</span>'
                 if two else ""))
    return (f'<section id="conversation"><h2>Conversation</h2>\n<table class="talk"><thead><tr><th>speaker</th>'
            f"<th>talk time</th><th>share of the call</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>\n"
            f'<p class="meta">{"; ".join(facts)}.</p>\n<div class="legend">{legend}</div>\n'
            f"{_strip(dyn, duration_s)}</section>\n")
